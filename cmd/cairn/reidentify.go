package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/cairn-ai/cairn/client"
)

const reidentifyUsage = `usage: cairn reidentify --system S --purpose TEXT PSEUDONYM...   reverse vaulted pseudonyms (dpo)
       cairn reidentify approve ID                               approve another dpo's request
       cairn reidentify get ID                                   show a request; its requester collects the values
  each also takes --url URL --token-file F (or env CAIRN_URL, CAIRN_TOKEN_FILE, CAIRN_TOKEN)`

// cmdReidentify reverses pseudonyms through a running server, which records every step in the system's log.
func cmdReidentify(args []string, stdout, stderr io.Writer) error {
	sub := ""
	if len(args) > 0 && (args[0] == "approve" || args[0] == "get") {
		sub, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("reidentify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, reidentifyUsage); fs.PrintDefaults() }
	url, tokenFile := clientFlags(fs)
	sys := fs.String("system", "", "the AI system whose pseudonyms these are")
	purpose := fs.String("purpose", "", "why the subject must be re-identified (recorded in the system's log)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return errUsage
	}
	switch {
	case sub != "" && len(pos) != 1, sub == "" && (*sys == "" || len(pos) == 0):
		fmt.Fprintln(stderr, reidentifyUsage)
		return errUsage
	case sub == "" && strings.TrimSpace(*purpose) == "":
		return fmt.Errorf("--purpose is required: say why the subject must be re-identified")
	}
	c, err := newClient(*url, *tokenFile)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var r *client.Reidentification
	switch sub {
	case "approve", "get":
		if sub == "approve" {
			r, err = c.ApproveReidentification(ctx, pos[0])
		} else {
			r, err = c.GetReidentification(ctx, pos[0])
		}
	default:
		r, err = c.Reidentify(ctx, *sys, *purpose, pos)
	}
	if err != nil {
		return err
	}
	printReidentification(stdout, r)
	return nil
}

func printReidentification(w io.Writer, r *client.Reidentification) {
	if r.Request != "" {
		fmt.Fprintf(w, "request %s: %s (%d approvals needed)\n", r.Request, r.State, r.Approvals)
	}
	if r.Purpose != "" {
		fmt.Fprintf(w, "requester %s, purpose: %s\n", r.Requester, r.Purpose)
	}
	if r.State == "pending" && r.Values == nil {
		fmt.Fprintln(w, "waiting for a second dpo: cairn reidentify approve "+r.Request)
	}
	pns := make([]string, 0, len(r.Values))
	for pn := range r.Values {
		pns = append(pns, pn)
	}
	slices.Sort(pns)
	for _, pn := range pns {
		fmt.Fprintf(w, "%s\t%s\n", pn, r.Values[pn])
	}
	for _, pn := range r.NotFound {
		fmt.Fprintf(w, "%s\t(not in the vault)\n", pn)
	}
}

const vaultUsage = `usage: cairn vault erase --domain D [--pseudonym PN]... [--value JSON]... [--url URL] [--token-file F]
  deletes the token-vault entries of a subject (every key period); the pseudonyms in the logs stay, irreversible`

// cmdVault administers the token vault through a running server.
func cmdVault(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "erase" {
		fmt.Fprintln(stderr, vaultUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("vault erase", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url, tokenFile := clientFlags(fs)
	domain := fs.String("domain", "", "pseudonymisation domain of the subject")
	var pns listFlag
	var values multiFlag
	fs.Var(&pns, "pseudonym", "a pseudonym of the subject (repeatable)")
	fs.Var(&values, "value", `an original value as JSON, e.g. '"alice@example.com"' (repeatable; never recorded)`)
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	if *domain == "" || len(pns)+len(values) == 0 {
		fmt.Fprintln(stderr, vaultUsage)
		return errUsage
	}
	raw := make([]json.RawMessage, len(values))
	for i, v := range values {
		if !json.Valid([]byte(v)) {
			// A bare word is taken as a string, the common case (an e-mail address, a name).
			b, _ := json.Marshal(v)
			v = string(b)
		}
		raw[i] = json.RawMessage(v)
	}
	c, err := newClient(*url, *tokenFile)
	if err != nil {
		return err
	}
	n, err := c.EraseSubject(context.Background(), *domain, pns, raw)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "erased %d vault entries of domain %s\n", n, *domain)
	return nil
}

// multiFlag collects a repeatable flag's values as given (no splitting at commas: JSON has commas).
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
