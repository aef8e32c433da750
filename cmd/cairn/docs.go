package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/client"
	"github.com/cairn-ai/cairn/internal/docgen"
	"github.com/cairn-ai/cairn/internal/gate"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/signature"
)

const docsUsage = `usage:
  cairn docs generate KIND --system S [--model-version V] [--at TIME] [--format md|html|json|pdf]
                           [--from TIME --to TIME] [--event REF] [-o FILE]
      KIND: model-card, evaluation-report, datasheet, technical-documentation, declaration-of-conformity,
            instructions-for-use, monitoring-summary (--from/--to), reconstruction (--event)
  cairn docs sign --system S (--file DOC | --digest D) [--document EVENT-ID] [-o SIG-FILE]
                  (--key PRIVATE-KEY | --signature SIG-FILE --signer-key KEY) [--signature-format ssh|ed25519]
                  [--attrs]   (record nothing; print the attrs that sign an approval event)
  cairn docs list --system S [--kind K] [--digest D]`

// parseInterleaved parses flags that may come before or after positional arguments, which it returns:
// `cairn reidentify approve ID --url U` reads as users write it.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func cmdDocs(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, docsUsage)
		return errUsage
	}
	sub := args[0]
	fs := flag.NewFlagSet("docs "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	url, tokenFile := clientFlags(fs)
	sys := fs.String("system", "", "the AI system")
	ctx := context.Background()
	switch sub {
	case "generate":
		mv := fs.String("model-version", "", "NAME@VERSION (default: the version registered last)")
		at := fs.String("at", "", "the log state at this RFC 3339 time (default now)")
		format := fs.String("format", "md", "md, html, json or pdf")
		from := fs.String("from", "", "monitoring summary: period start")
		to := fs.String("to", "", "monitoring summary: period end")
		ev := fs.String("event", "", "reconstruction: the event (id or leaf index)")
		out := fs.String("o", "", "write the document to this file (default stdout)")
		pos, err := parseInterleaved(fs, args[1:])
		if err != nil || len(pos) != 1 {
			fmt.Fprintln(stderr, docsUsage)
			return errUsage
		}
		if *sys == "" {
			return errors.New("--system is required")
		}
		for _, t := range []struct{ name, v string }{{"--at", *at}, {"--from", *from}, {"--to", *to}} {
			if t.v != "" {
				if _, err := time.Parse(time.RFC3339Nano, t.v); err != nil {
					return fmt.Errorf("%s: not an RFC 3339 time", t.name)
				}
			}
		}
		c, err := newClient(*url, *tokenFile)
		if err != nil {
			return err
		}
		d, err := c.GenerateDocument(ctx, *sys, client.DocumentRequest{Kind: pos[0], ModelVersion: *mv, At: *at, Format: *format, From: *from, To: *to, Event: *ev})
		if err != nil {
			return err
		}
		if *out == "" {
			stdout.Write(d.Bytes)
		} else if err := os.WriteFile(*out, d.Bytes, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "recorded as document event %s (leaf %d), digest %s\n", d.Event, d.Index, d.Digest)
		return nil
	case "sign":
		docEv := fs.String("document", "", "the document event's id (printed by docs generate; default: the latest recorded with the file's digest)")
		sigOut := fs.String("o", "", "also write the signature to this file (to hand over with the document)")
		file := fs.String("file", "", "the document as generated (md, html or json; for a PDF, its HTML)")
		digest := fs.String("digest", "", "the document's digest, instead of --file")
		key := fs.String("key", "", "Ed25519 private key: OpenSSH (unencrypted) or PKCS #8 PEM")
		sigFile := fs.String("signature", "", "a signature made elsewhere (ssh-keygen -Y sign -n cairn-document over the digest text)")
		signerKey := fs.String("signer-key", "", "with --signature: the signer's public key (file or text)")
		sigFormat := fs.String("signature-format", "", "ssh or ed25519 (default: ssh for --key; read from --signature)")
		attrsOnly := fs.Bool("attrs", false, "record nothing: print the attrs that carry this signature in an approval event (signed_digest, signature, signature_format, signer_key)")
		if _, err := parseInterleaved(fs, args[1:]); err != nil {
			return errUsage
		}
		if *sys == "" && !*attrsOnly {
			return errors.New("--system is required")
		}
		d := *digest
		if *file != "" {
			b, err := os.ReadFile(*file)
			if err != nil {
				return err
			}
			d = docgen.Digest(b)
		}
		if d == "" {
			return errors.New("give --file or --digest: the signature is over the document's digest")
		}
		var sig, pub, format string
		switch {
		case *key != "":
			b, err := os.ReadFile(*key)
			if err != nil {
				return err
			}
			priv, err := signature.ParsePrivateKey(b)
			if err != nil {
				return err
			}
			pub = signature.AuthorizedKey(priv.Public().(ed25519.PublicKey))
			format = *sigFormat
			if format == "" {
				format = signature.FormatSSH
			}
			switch format {
			case signature.FormatSSH:
				sig = signature.SignSSH(priv, d)
			case signature.FormatEd25519:
				sig = signature.SignEd25519(priv, d)
			default:
				return fmt.Errorf("--signature-format: %q is neither ssh nor ed25519", format)
			}
		case *sigFile != "":
			b, err := os.ReadFile(*sigFile)
			if err != nil {
				return err
			}
			sig = string(b)
			if pub = textOrFile(*signerKey); pub == "" {
				return errors.New("--signer-key is required with --signature")
			}
			format = *sigFormat
			if format == "" {
				format = signature.FormatEd25519
				if strings.Contains(sig, "BEGIN SSH SIGNATURE") {
					format = signature.FormatSSH
				}
			}
		default:
			return errors.New("give --key, or --signature with --signer-key")
		}
		if *attrsOnly {
			if _, err := signature.Verify(format, sig, pub, d); err != nil {
				return err
			}
			b, _ := json.Marshal(map[string]string{"signed_digest": d, "signature": sig, "signature_format": format, "signer_key": pub})
			stdout.Write(append(b, '\n'))
			return nil
		}
		c, err := newClient(*url, *tokenFile)
		if err != nil {
			return err
		}
		if *docEv == "" {
			found, err := c.FindDocuments(ctx, *sys, d, "")
			if err != nil {
				return err
			}
			var f struct {
				Documents []struct {
					ID string `json:"id"`
				} `json:"documents"`
			}
			json.Unmarshal(found, &f)
			if len(f.Documents) == 0 {
				return fmt.Errorf("the log records no document with digest %s", d)
			}
			*docEv = f.Documents[len(f.Documents)-1].ID
		}
		out, err := c.SignDocument(ctx, *sys, *docEv, format, sig, pub)
		if err != nil {
			return err
		}
		var r struct {
			ID          string `json:"id"`
			Index       uint64 `json:"index"`
			Fingerprint string `json:"signer_fingerprint"`
		}
		json.Unmarshal(out, &r)
		fmt.Fprintf(stdout, "signature by %s over %s recorded as document event %s (leaf %d)\n", r.Fingerprint, d, r.ID, r.Index)
		if *sigOut != "" {
			return os.WriteFile(*sigOut, []byte(sig), 0o644)
		}
		return nil
	case "list":
		kind := fs.String("kind", "", "document kind")
		digest := fs.String("digest", "", "document digest")
		if _, err := parseInterleaved(fs, args[1:]); err != nil {
			return errUsage
		}
		if *sys == "" {
			return errors.New("--system is required")
		}
		c, err := newClient(*url, *tokenFile)
		if err != nil {
			return err
		}
		out, err := c.FindDocuments(ctx, *sys, *digest, *kind)
		if err != nil {
			return err
		}
		stdout.Write(append(out, '\n'))
		return nil
	}
	fmt.Fprintln(stderr, docsUsage)
	return errUsage
}

// textOrFile returns s itself, or the contents of the file s names.
func textOrFile(s string) string {
	if b, err := os.ReadFile(s); err == nil {
		return strings.TrimSpace(string(b))
	}
	return strings.TrimSpace(s)
}

const gateUsage = `usage:
  cairn gate check --system S --model-version V [--policy FILE] [--junit FILE] [--json]
      exit 0 only when every rule of the policy holds; 1 when one fails`

func cmdGate(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, gateUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("gate check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url, tokenFile := clientFlags(fs)
	sys := fs.String("system", "", "the AI system")
	mv := fs.String("model-version", "", "NAME@VERSION to check")
	policy := fs.String("policy", "", "gate policy file (YAML or JSON); default: the gates member of the system definition")
	junit := fs.String("junit", "", "also write a JUnit XML report to this file")
	jsonOut := fs.Bool("json", false, "print the server's JSON answer instead of the text report")
	if _, err := parseInterleaved(fs, args[1:]); err != nil {
		return errUsage
	}
	if *sys == "" || *mv == "" {
		fmt.Fprintln(stderr, "cairn gate: --system and --model-version are required")
		fmt.Fprintln(stderr, gateUsage)
		return errUsage
	}
	var pb []byte
	if *policy != "" {
		var err error
		if pb, err = os.ReadFile(*policy); err != nil {
			return err
		}
		if _, _, err := gate.ParsePolicy(pb); err != nil {
			return err
		}
	}
	c, err := newClient(*url, *tokenFile)
	if err != nil {
		return err
	}
	out, err := c.GateCheck(context.Background(), *sys, *mv, pb)
	if err != nil {
		return err
	}
	var r gate.Result
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("gate answer: %w", err)
	}
	if *jsonOut {
		stdout.Write(append(out, '\n'))
	} else {
		io.WriteString(stdout, r.Text())
	}
	if *junit != "" {
		if err := os.WriteFile(*junit, r.JUnit(), 0o644); err != nil {
			return err
		}
	}
	if !r.Passed {
		return exitError(1)
	}
	return nil
}

// verifyDocument checks a generated document: its checkpoint against the log's key, a detached signature over
// its digest, and (with --url) that the log records it and every signature recorded for it.
func verifyDocument(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify document", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url, tokenFile := clientFlags(fs)
	sys := fs.String("system", "", "with --online: the system whose log records the document")
	online := fs.Bool("online", false, "also ask the server (--url) that the log records the document, and check every signature recorded for it")
	vkey := fs.String("vkey", "", "the log's note verifier key (text or file); default: fetched from --url with --online, else the one quoted in the document (integrity, not origin)")
	sigFile := fs.String("signature", "", "a detached signature over the document's digest")
	signerKey := fs.String("signer-key", "", "with --signature: the signer's public key (file or text)")
	pos, err := parseInterleaved(fs, args)
	if err != nil || len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: cairn verify document FILE [--vkey KEY] [--signature SIG --signer-key KEY] [--online --system S --url URL]")
		return errUsage
	}
	b, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	if strings.HasPrefix(string(b), "%PDF-") {
		return errors.New("a PDF is recorded under the digest of the HTML it was printed from: verify that HTML")
	}
	digest := docgen.Digest(b)
	fmt.Fprintf(stdout, "document: %s\n", digest)
	note, err := docgen.ExtractCheckpoint(b)
	if err != nil {
		return err
	}
	var c *client.Client
	if *online {
		if *sys == "" {
			return errors.New("--online needs --system")
		}
		if c, err = newClient(*url, *tokenFile); err != nil {
			return err
		}
	}
	key := textOrFile(*vkey)
	switch {
	case key != "":
	case c != nil:
		if key, err = c.VKey(context.Background(), *sys); err != nil {
			return err
		}
	default:
		if key = quotedVKey(b); key == "" {
			return errors.New("no verifier key: give --vkey")
		}
		fmt.Fprintln(stdout, "note: using the verifier key quoted in the document, which proves integrity but not origin")
	}
	cp, err := ledger.OpenCheckpoint([]byte(note), key)
	if err != nil {
		return fmt.Errorf("the document's checkpoint does not verify: %w", err)
	}
	fmt.Fprintf(stdout, "checkpoint: %s, %d events, signed by the log's key\n", cp.Origin, cp.Size)
	if *sigFile != "" {
		sb, err := os.ReadFile(*sigFile)
		if err != nil {
			return err
		}
		pub := textOrFile(*signerKey)
		if pub == "" {
			return errors.New("--signer-key is required with --signature")
		}
		format := signature.FormatEd25519
		if strings.Contains(string(sb), "BEGIN SSH SIGNATURE") {
			format = signature.FormatSSH
		}
		fp, err := signature.Verify(format, string(sb), pub, digest)
		if err != nil {
			return fmt.Errorf("signature: %w", err)
		}
		fmt.Fprintf(stdout, "signature: verifies, key %s\n", fp)
	}
	if c != nil {
		out, err := c.FindDocuments(context.Background(), *sys, digest, "")
		if err != nil {
			return err
		}
		var found struct {
			Documents []struct {
				ID         string          `json:"id"`
				Index      uint64          `json:"index"`
				Actor      string          `json:"actor"`
				Attrs      json.RawMessage `json:"attrs"`
				Signatures []struct {
					ID    string `json:"id"`
					Index uint64 `json:"index"`
					Attrs struct {
						Signature string `json:"signature"`
						Format    string `json:"signature_format"`
						Key       string `json:"signer_key"`
					} `json:"attrs"`
				} `json:"signatures"`
			} `json:"documents"`
		}
		if err := json.Unmarshal(out, &found); err != nil {
			return err
		}
		if len(found.Documents) == 0 {
			return errors.New("the log records no document with this digest")
		}
		for _, d := range found.Documents {
			fmt.Fprintf(stdout, "recorded: document event %s (leaf %d) by %s\n", d.ID, d.Index, d.Actor)
			for _, s := range d.Signatures {
				fp, err := signature.Verify(s.Attrs.Format, s.Attrs.Signature, s.Attrs.Key, digest)
				if err != nil {
					return fmt.Errorf("recorded signature %s: %w", s.ID, err)
				}
				fmt.Fprintf(stdout, "recorded signature: event %s (leaf %d), key %s, verifies\n", s.ID, s.Index, fp)
			}
		}
	}
	fmt.Fprintln(stdout, "verified")
	return nil
}

// quotedVKey finds the verifier key a document quotes.
func quotedVKey(b []byte) string {
	var d struct {
		Checkpoint struct {
			VKey string `json:"vkey"`
		} `json:"checkpoint"`
	}
	if json.Unmarshal(b, &d) == nil && d.Checkpoint.VKey != "" {
		return d.Checkpoint.VKey
	}
	s := string(b)
	const marker = "note verifier key "
	i := strings.LastIndex(s, marker)
	if i < 0 {
		return ""
	}
	s = s[i+len(marker):]
	for _, q := range [][2]string{{"`", "`"}, {"<code>", "</code>"}} {
		if rest, ok := strings.CutPrefix(s, q[0]); ok {
			if v, _, ok := strings.Cut(rest, q[1]); ok {
				return html.UnescapeString(v)
			}
		}
	}
	return ""
}
