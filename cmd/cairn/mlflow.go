package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cairn-ai/cairn/internal/mlflow"
)

// cmdMLflow runs the MLflow connector.
func cmdMLflow(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "sync" {
		fmt.Fprintln(stderr, "usage: cairn mlflow sync --mlflow-uri URL --system S [--state FILE] [--watch INTERVAL] [--webhook-listen ADDR --webhook-secret-file F]")
		return errUsage
	}
	fs := flag.NewFlagSet("mlflow sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url, tokenFile := clientFlags(fs)
	uri := fs.String("mlflow-uri", os.Getenv("MLFLOW_TRACKING_URI"), "MLflow tracking server (env MLFLOW_TRACKING_URI); credentials from MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD")
	sys := fs.String("system", "", "the Cairn system to record in")
	state := fs.String("state", "", "file remembering what was recorded (default ./cairn-mlflow-SYSTEM.json)")
	watch := fs.Duration("watch", 0, "keep syncing at this interval until interrupted")
	hookAddr := fs.String("webhook-listen", "", "with --watch: also sync at once when MLflow delivers a webhook to this address")
	hookSecret := fs.String("webhook-secret-file", "", "file holding the webhook secret, to check X-MLflow-Signature")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	if *uri == "" || *sys == "" {
		return errors.New("--mlflow-uri and --system are required")
	}
	if *state == "" {
		*state = filepath.Join(".", "cairn-mlflow-"+*sys+".json")
	}
	c, err := newClient(*url, *tokenFile)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := mlflow.Config{System: *sys, StatePath: *state, MLflow: mlflow.NewClient(*uri), Cairn: c, Logger: logger}
	once := func(ctx context.Context) error {
		r, err := mlflow.Sync(ctx, cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s\n", time.Now().UTC().Format(time.RFC3339), r)
		return nil
	}
	if *watch <= 0 {
		return once(context.Background())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	trigger := make(chan struct{}, 1)
	if *hookAddr != "" {
		if *hookSecret == "" {
			return errors.New("--webhook-listen needs --webhook-secret-file")
		}
		secret, err := os.ReadFile(*hookSecret)
		if err != nil {
			return err
		}
		stopHook, err := mlflow.ListenWebhooks(ctx, *hookAddr, trimNL(secret), trigger, logger)
		if err != nil {
			return err
		}
		defer stopHook()
	}
	t := time.NewTicker(*watch)
	defer t.Stop()
	for {
		if err := once(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			logger.Error("mlflow sync", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-trigger:
		}
	}
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
