package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
)

const verifyProofUsage = `usage: cairn verify proof --vkey KEY [--leaf FILE] FILE.tlog-proof
  checks a c2sp.org/tlog-proof@v1 file (GET /v1/systems/{s}/events/{ref}?format=tlog-proof) offline:
  the checkpoint's signature by the log's key, and the leaf's inclusion at the proof's index`

// verifyProof checks a tlog proof offline with the log's verifier key alone.
func verifyProof(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify proof", flag.ContinueOnError)
	fs.SetOutput(stderr)
	vkey := fs.String("vkey", "", "the log's note verifier key, obtained out of band (GET /logs/{system}/vkey, or from the operator)")
	leafFile := fs.String("leaf", "", "the leaf to check (default: the one in the proof's extra line)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 || *vkey == "" {
		fmt.Fprintln(stderr, verifyProofUsage)
		return errUsage
	}
	b, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	var leaf []byte
	if *leafFile != "" {
		if leaf, err = os.ReadFile(*leafFile); err != nil {
			return err
		}
	}
	p, c, err := ledger.VerifyTlogProof(b, *vkey, leaf)
	if err != nil {
		return err
	}
	if leaf == nil {
		leaf = p.Extra
	}
	desc := ""
	if l, err := event.ParseLeaf(leaf); err == nil {
		desc = fmt.Sprintf(": event %s, %s, recorded %s", l.ID, l.Type, event.FormatRecorded(l.Recorded))
	}
	fmt.Fprintf(stdout, "proof verifies: entry %d of %s (checkpoint of %d entries)%s\n", p.Index, c.Origin, c.Size, desc)
	return nil
}
