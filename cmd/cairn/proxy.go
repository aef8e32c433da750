package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cairn-ai/cairn/client"
	"github.com/cairn-ai/cairn/internal/atomicfile"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/proxy"
	"github.com/cairn-ai/cairn/internal/system"
)

const proxyUsage = `Usage: cairn proxy --upstream URL --system S [--data DIR | --url URL --token-file F] [flags]

Runs a reverse proxy in front of a model server that passes every call through byte for byte and records an
inference event per call in system S's log: in this process (--data DIR) or on a Cairn server (--url, with an
ingest token). Protocols: Open Inference Protocol v2, MLflow /invocations, OpenAI Chat Completions. See
docs/capture.md.

Flags:
`

func cmdProxy(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, proxyUsage); fs.PrintDefaults() }
	listen := fs.String("listen", "127.0.0.1:7701", "address to listen on (loopback unless told otherwise)")
	upstream := fs.String("upstream", "", "the model server's base URL (required)")
	sys := fs.String("system", "", "the AI system whose log records the calls (required)")
	protocol := fs.String("protocol", "auto", "auto (by route), oip-v2, mlflow or openai")
	model := fs.String("model", "", "model name to record when the protocol carries none (MLflow /invocations)")
	modelVersion := fs.String("model-version", "", "model version to record when the protocol carries none")
	deployment := fs.String("deployment", "", "deployment (environment) recorded with each call")
	policy := fs.String("failure-policy", "", "fail-closed or spool; default: the system definition's capture.failure_policy, else fail-closed")
	spoolDir := fs.String("spool", "", "spool directory (default DATA/spool/S in-process, ./cairn-spool/S otherwise)")
	spoolSync := fs.Duration("spool-sync", 10*time.Millisecond, "how often the spool is fsync'd")
	spoolKeyFile := fs.String("spool-key", "", "file of the key encrypting the spool, created if missing (default: SPOOL.key; with --data the key is derived from the instance's keyring)")
	maxCapture := fs.Int("max-capture", 256<<10, "largest input or output recorded as content; larger ones by digest")
	insecure := fs.Bool("insecure", false, "allow listening on a non-loopback address")
	data := fs.String("data", "", "record in this process, in this data directory (as 'cairn serve' would; not while a server uses it)")
	register := fs.String("register", "", "with --data: apply this system definition (YAML or JSON) before starting")
	signingKey := fs.String("signing-key", "", "with --data: checkpoint signing key file (default DATA/keys/signing.key)")
	kekPath := fs.String("kek", "", "with --data: key-encryption key file (default DATA/keys/kek)")
	urlFlag, tokenFile := clientFlags(fs)
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *upstream == "" || *sys == "" || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	up, err := url.Parse(*upstream)
	if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
		return fmt.Errorf("--upstream: want an http(s) URL")
	}
	if !*insecure && !loopback(*listen) {
		return fmt.Errorf("refusing to listen on %s, which is not a loopback address, without --insecure", *listen)
	}
	if *policy != "" && *policy != proxy.FailClosed && *policy != proxy.SpoolPolicy {
		return fmt.Errorf("--failure-policy: want fail-closed or spool")
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var sink proxy.Sink
	var defPolicy string
	var spoolKey []byte
	where := ""
	if *data != "" {
		p := defaultPaths(*data, *signingKey, *kekPath)
		if err := os.MkdirAll(p.data, 0o700); err != nil {
			return err
		}
		unlock, err := lockData(p.data)
		if err != nil {
			return err
		}
		defer unlock()
		op, err := openLedger(ctx, p, ledgerOptions{logger: logger}, stdout)
		if err != nil {
			return err
		}
		l, keys := op.l, op.keys
		defer l.Close()
		if op.vault != nil {
			defer op.vault.Close()
		}
		if *spoolKeyFile == "" {
			if spoolKey, err = keys.Secret("proxy-spool"); err != nil {
				return err
			}
		}
		if *register != "" {
			if err := registerFile(ctx, l, *register); err != nil {
				return err
			}
		}
		lg, err := l.Log(*sys)
		if err != nil || lg.Definition() == nil {
			return fmt.Errorf("system %q is not registered in %s (give --register FILE)", *sys, p.data)
		}
		defPolicy = lg.Definition().FailurePolicy()
		sink = &proxy.LedgerSink{Ledger: l, System: *sys, Actor: "proxy"}
		if *spoolDir == "" {
			*spoolDir = filepath.Join(p.data, "spool", *sys)
		}
		where = "in-process, data " + p.data
	} else {
		if *register != "" {
			return fmt.Errorf("--register needs --data (use 'cairn system apply' against a server)")
		}
		c, err := newClient(*urlFlag, *tokenFile)
		if err != nil {
			return err
		}
		defPolicy = remotePolicy(ctx, c, *sys)
		sink = &proxy.RemoteSink{Client: c, System: *sys}
		if *spoolDir == "" {
			*spoolDir = filepath.Join("cairn-spool", *sys)
		}
		where = "on " + c.URL
	}
	pol := *policy
	switch {
	case defPolicy != "" && pol != "" && pol != defPolicy:
		return fmt.Errorf("system %s's definition sets capture.failure_policy %s; --failure-policy %s would contradict it", *sys, defPolicy, pol)
	case defPolicy != "":
		pol = defPolicy
	case pol == "":
		pol = proxy.FailClosed
	}
	if spoolKey == nil {
		if *spoolKeyFile == "" {
			*spoolKeyFile = filepath.Clean(*spoolDir) + ".key"
		}
		var created bool
		if spoolKey, created, err = loadSpoolKey(*spoolKeyFile); err != nil {
			return err
		}
		if created {
			fmt.Fprintf(stdout, "created spool key: %s (it decrypts the spool's events: keep it apart from the spool, like the KEK)\n", *spoolKeyFile)
		}
	}
	sp, err := proxy.OpenSpool(*spoolDir, spoolKey, *spoolSync)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer sp.Close()
	rec := proxy.NewRecorder(sink, sp, pol, logger)
	defer rec.Close()
	px, err := proxy.New(proxy.Config{Upstream: up, Protocol: *protocol, Model: *model, ModelVersion: *modelVersion,
		Deployment: *deployment, MaxCapture: *maxCapture, Logger: logger}, rec)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: px, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	fmt.Fprintf(stdout, "cairn proxy on http://%s -> %s (system %s, protocol %s, %s, recording %s)\n", ln.Addr(), up, *sys, *protocol, pol, where)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	logger.Info("shutting down: draining calls")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	return nil
}

// loadSpoolKey reads a 32-byte spool key (hex) from a file, creating it when missing.
func loadSpoolKey(file string) ([]byte, bool, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		k := make([]byte, 32)
		rand.Read(k)
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return nil, false, err
		}
		if err := atomicfile.Write(file, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
			return nil, false, err
		}
		return k, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		return nil, false, fmt.Errorf("%s: not a spool key (64 hex digits)", file)
	}
	return k, false, nil
}

// registerFile applies a system definition file to an in-process ledger.
func registerFile(ctx context.Context, l *ledger.Ledger, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if ext := strings.ToLower(filepath.Ext(file)); ext == ".yaml" || ext == ".yml" {
		if b, err = system.YAMLToJSON(b); err != nil {
			return fmt.Errorf("%s: %v", file, err)
		}
	}
	if _, _, err := l.Register(ctx, b, "proxy"); err != nil {
		return fmt.Errorf("%s: %v", file, err)
	}
	return nil
}

// remotePolicy reads a system's capture failure policy from the server; "" when the token may not read it.
func remotePolicy(ctx context.Context, c *client.Client, sys string) string {
	b, err := c.System(ctx, sys)
	if err != nil {
		return ""
	}
	var out struct {
		Definition struct {
			Capture struct {
				FailurePolicy string `json:"failure_policy"`
			} `json:"capture"`
		} `json:"definition"`
	}
	if json.Unmarshal(b, &out) != nil {
		return ""
	}
	return out.Definition.Capture.FailurePolicy
}
