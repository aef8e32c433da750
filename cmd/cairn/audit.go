package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/client"
	"github.com/cairn-ai/cairn/internal/audit"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/registry"
)

// startRegistry follows every log, including logs registered later, into the in-memory lineage registry. The
// followers run behind ingest; stop ends them.
func startRegistry(ctx context.Context, l *ledger.Ledger, logger *slog.Logger) (*registry.Registry, func()) {
	reg := registry.New(logger)
	stop := followLogs(ctx, l, func(ctx context.Context, name string, lg *ledger.Log) {
		if name != ledger.AdminLog {
			reg.Follow(ctx, name, lg.Store(), lg.Subscribe())
		}
	})
	return reg, stop
}

const auditUsage = `usage:
  cairn audit live        --system S [--at TIME] [--environment E] [--json]
  cairn audit models      --system S
  cairn audit lineage     --system S --model NAME --version V [--json]
  cairn audit reconstruct --system S [--json] EVENT      (EVENT: an event id or index)
  cairn audit check       --system S -f EVENT.json        (exit 1 when the event would break a lifecycle rule)`

func cmdAudit(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, auditUsage)
		return errUsage
	}
	sub := args[0]
	fs := flag.NewFlagSet("audit "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	url, tokenFile := clientFlags(fs)
	sys := fs.String("system", "", "the AI system")
	jsonOut := fs.Bool("json", false, "print the server's JSON answer")
	var at, env, model, ver, file *string
	switch sub {
	case "live":
		at = fs.String("at", "", "RFC 3339 time (default now)")
		env = fs.String("environment", "", "only this environment")
	case "lineage":
		model = fs.String("model", "", "model name")
		ver = fs.String("version", "", "model version")
	case "check":
		file = fs.String("f", "", "file holding the event to check (JSON), - for stdin")
	case "models", "reconstruct":
	default:
		fmt.Fprintln(stderr, auditUsage)
		return errUsage
	}
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	if *sys == "" {
		return errors.New("--system is required")
	}
	c, err := newClient(*url, *tokenFile)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var out json.RawMessage
	switch sub {
	case "live":
		t := time.Now()
		if *at != "" {
			if t, err = time.Parse(time.RFC3339Nano, *at); err != nil {
				return fmt.Errorf("--at: not an RFC 3339 time")
			}
		}
		if out, err = c.Live(ctx, *sys, t, *env); err == nil && !*jsonOut {
			return printLive(stdout, out)
		}
	case "models":
		out, err = c.Models(ctx, *sys)
	case "lineage":
		if *model == "" || *ver == "" {
			return errors.New("--model and --version are required")
		}
		if out, err = c.Lineage(ctx, *sys, *model, *ver); err == nil && !*jsonOut {
			var l registry.Lineage
			if err := json.Unmarshal(out, &l); err != nil {
				return err
			}
			printLineage(stdout, &l, "")
			return nil
		}
	case "reconstruct":
		if fs.NArg() != 1 {
			return errors.New("give one event id or index")
		}
		if out, err = c.Reconstruct(ctx, *sys, fs.Arg(0)); err == nil && !*jsonOut {
			return printReconstruction(stdout, out)
		}
	case "check":
		return auditCheck(ctx, c, *sys, *file, stdout)
	}
	if err != nil {
		return err
	}
	stdout.Write(out)
	return nil
}

func auditCheck(ctx context.Context, c *client.Client, sys, file string, stdout io.Writer) error {
	if file == "" {
		return errors.New("-f EVENT.json is required")
	}
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return err
	}
	// One event, or an ingest body of one event.
	var ev client.Event
	if t := strings.TrimSpace(string(b)); strings.HasPrefix(t, "[") {
		var evs []client.Event
		if err := json.Unmarshal(b, &evs); err != nil || len(evs) != 1 {
			return fmt.Errorf("%s: want one event (an object, or an array of one)", file)
		}
		ev = evs[0]
	} else if err := json.Unmarshal(b, &ev); err != nil {
		return fmt.Errorf("%s: %v", file, err)
	}
	r, err := c.CheckLifecycle(ctx, sys, ev)
	if err != nil {
		return err
	}
	if r.Compliant {
		fmt.Fprintln(stdout, "compliant")
		return nil
	}
	fmt.Fprintf(stdout, "not compliant: %s\n", strings.Join(r.Violations, ", "))
	return exitError(1)
}

func nodeLine(n *registry.Node) string {
	if n == nil {
		return "none"
	}
	s := fmt.Sprintf("#%d %s by %s at %s", n.Index, n.Type, n.Actor, n.Time.UTC().Format(time.RFC3339Nano))
	if len(n.Violations) > 0 {
		s += " [breaks " + strings.Join(n.Violations, ", ") + "]"
	}
	return s
}

func printLive(w io.Writer, raw []byte) error {
	var lr struct {
		At           string          `json:"at"`
		Environments []registry.Live `json:"environments"`
		Indexed      uint64          `json:"indexed"`
	}
	if err := json.Unmarshal(raw, &lr); err != nil {
		return err
	}
	fmt.Fprintf(w, "live at %s (registry reflects %d entries)\n", lr.At, lr.Indexed)
	if len(lr.Environments) == 0 {
		fmt.Fprintln(w, "  nothing was deployed by then")
	}
	for _, l := range lr.Environments {
		printLiveEntry(w, &l, "  ")
	}
	return nil
}

func printLiveEntry(w io.Writer, l *registry.Live, in string) {
	if l.State == "retired" {
		fmt.Fprintf(w, "%s%s: retired (%s)\n", in, l.Environment, nodeLine(l.Deployment))
	} else {
		fmt.Fprintf(w, "%s%s: %s version %s\n", in, l.Environment, l.Name, l.Version)
		fmt.Fprintf(w, "%s  deployment  %s\n", in, nodeLine(l.Deployment))
		fmt.Fprintf(w, "%s  approval    %s\n", in, nodeLine(l.Approval))
		if l.Run != nil {
			fmt.Fprintf(w, "%s  training    %s (run %s)\n", in, nodeLine(l.Run), l.Run.Attr("run_id"))
		}
		for _, d := range l.Datasets {
			fmt.Fprintf(w, "%s  data        %s %s %s\n", in, d.Attr("name"), d.Attr("version"), firstNonEmpty(d.Attr("digest"), d.Attr("mlflow_digest"), d.Attr("uri")))
		}
		if l.ConfigDigest != "" {
			fmt.Fprintf(w, "%s  config      %s\n", in, l.ConfigDigest)
		}
	}
	for _, d := range l.Documents {
		fmt.Fprintf(w, "%s  document    %s %s (#%d)\n", in, d.Attr("kind"), d.Attr("digest"), d.Index)
	}
	for _, n := range l.RecordedLater {
		fmt.Fprintf(w, "%s  ! rests on #%d (%s), which happened at %s but was recorded at %s\n", in, n.Index, n.Type,
			n.Time.UTC().Format(time.RFC3339Nano), n.Recorded.UTC().Format(time.RFC3339Nano))
	}
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func printLineage(w io.Writer, l *registry.Lineage, in string) {
	fmt.Fprintf(w, "%smodel %s version %s\n", in, l.Name, l.Version)
	for _, d := range l.Datasets {
		fmt.Fprintf(w, "%s  dataset     %s %s %s (#%d)\n", in, d.Attr("name"), d.Attr("version"), firstNonEmpty(d.Attr("digest"), d.Attr("mlflow_digest"), d.Attr("uri")), d.Index)
	}
	if l.Run != nil {
		fmt.Fprintf(w, "%s  run         %s (run %s)\n", in, nodeLine(l.Run), l.Run.Attr("run_id"))
	}
	fmt.Fprintf(w, "%s  registered  %s\n", in, nodeLine(l.Registered))
	for _, a := range l.Aliases {
		fmt.Fprintf(w, "%s  alias       %s %s (%s)\n", in, a.Attr("alias"), a.Attr("alias_action"), nodeLine(a))
	}
	for _, e := range l.Evaluations {
		fmt.Fprintf(w, "%s  evaluation  %s\n", in, nodeLine(e))
	}
	for _, a := range l.Approvals {
		counts := "does not count"
		if a.Counts != nil && *a.Counts {
			counts = "counts"
		}
		fmt.Fprintf(w, "%s  approval    %s %s (%s)\n", in, a.Attr("decision"), nodeLine(a), counts)
	}
	for _, d := range l.Deployments {
		fmt.Fprintf(w, "%s  deployment  %s to %s: %s\n", in, d.Attr("action"), d.Deployment, nodeLine(d))
	}
	fmt.Fprintf(w, "%s  inferences  %d\n", in, l.Inferences)
}

func printReconstruction(w io.Writer, raw []byte) error {
	var r audit.Reconstruction
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	fmt.Fprintf(w, "event #%d of %s\n  envelope  %s\n", r.Index, r.System, r.Envelope)
	if len(r.Payload) > 0 {
		fmt.Fprintf(w, "  payload   %s\n", r.Payload)
	}
	if r.Live != nil {
		fmt.Fprintln(w, "live when it ran:")
		printLiveEntry(w, r.Live, "  ")
		if r.ModelMatchesLive != nil && !*r.ModelMatchesLive {
			fmt.Fprintln(w, "  ! the event names another model version than the one live in its deployment")
		}
	}
	if r.Lineage != nil {
		fmt.Fprintln(w, "lineage:")
		printLineage(w, r.Lineage, "  ")
	}
	fmt.Fprintf(w, "oversight: %d action(s)\n", len(r.Oversight))
	for _, o := range r.Oversight {
		fmt.Fprintf(w, "  %s %s  %s\n", o.Attr("action"), nodeLine(o.Node), o.Payload)
	}
	verdict := "VERIFIED"
	if !r.Verified {
		verdict = "NOT VERIFIED"
	}
	fmt.Fprintf(w, "proof: %d evidence event(s) included in the signed tree of size %d: %s\n", r.Evidence, r.TreeSize, verdict)
	return nil
}

// cmdExport writes the evidence bundle of an event's reconstruction to a file.
func cmdExport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url, tokenFile := clientFlags(fs)
	sys := fs.String("system", "", "the AI system")
	ref := fs.String("event", "", "the event to reconstruct: an id or an index")
	outFile := fs.String("o", "", "bundle file to write")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *sys == "" || *ref == "" || *outFile == "" {
		fmt.Fprintln(stderr, "usage: cairn export --system S --event ID -o FILE")
		return errUsage
	}
	c, err := newClient(*url, *tokenFile)
	if err != nil {
		return err
	}
	b, err := c.Export(context.Background(), *sys, *ref)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*outFile, b, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes); check it offline with: cairn verify bundle %s\n", *outFile, len(b), *outFile)
	return nil
}

// verifyBundle checks an evidence bundle offline and prints what it proves.
func verifyBundle(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify bundle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	vkey := fs.String("vkey", "", "the log's note verifier key, obtained out of band (without it the bundle is checked against its own key: integrity, not origin)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: cairn verify bundle [--vkey KEY] FILE")
		return errUsage
	}
	b, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	v, err := audit.VerifyBundle(b, *vkey)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bundle verifies: %d event(s) of system %s, included in the tree of size %d signed by %s\n",
		len(v.Events), v.System, v.Checkpoint.Size, v.Checkpoint.Origin)
	if *vkey == "" {
		fmt.Fprintln(stdout, "note: checked against the key in the bundle; pass --vkey to check who signed it")
	}
	for i, e := range v.Events {
		role := "evidence"
		if i == 0 {
			role = "subject "
		}
		model := ""
		if e.Envelope.Model != nil {
			model = " model " + e.Envelope.Model.Name + "@" + e.Envelope.Model.Version
		}
		fmt.Fprintf(stdout, "  %s #%d %s%s by %s at %s\n", role, e.Index, e.Envelope.Type, model, e.Envelope.Actor, e.Envelope.Time)
		if e.Payload != nil {
			fmt.Fprintf(stdout, "           payload %s\n", e.Payload)
		}
	}
	return nil
}
