package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/cairn-ai/cairn/internal/api"
	"github.com/cairn-ai/cairn/internal/index"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/store/local"
	"golang.org/x/mod/sumdb/tlog"
)

// startIndex opens the query index and follows every log, including logs registered later. The followers run
// behind ingest and never block it; stop ends them and closes the index.
func startIndex(ctx context.Context, p paths, l *ledger.Ledger, logger *slog.Logger) (api.Index, func(), error) {
	x, err := index.Open(p.index())
	if err != nil {
		return nil, nil, fmt.Errorf("open index: %w", err)
	}
	wait := followLogs(ctx, l, func(ctx context.Context, name string, lg *ledger.Log) {
		if err := x.Follow(ctx, name, lg.Store(), lg.Committed()); err != nil && ctx.Err() == nil {
			logger.Error("index follower stopped", "system", name, "err", err)
		}
	})
	stop := func() {
		wait()
		x.Close()
	}
	return api.LedgerIndex(x, l), stop, nil
}

// followLogs runs follow in its own goroutine for every log, including logs registered
// later, until ctx ends; the returned function stops the followers and waits for them.
func followLogs(ctx context.Context, l *ledger.Ledger, follow func(ctx context.Context, name string, lg *ledger.Log)) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	following := map[string]bool{}
	scan := func() {
		for _, name := range l.Systems() {
			if following[name] {
				continue
			}
			lg, err := l.Log(name)
			if err != nil {
				continue
			}
			following[name] = true
			wg.Go(func() { follow(ctx, name, lg) })
		}
	}
	scan()
	wg.Go(func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				scan()
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}

func cmdReindex(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reindex", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./cairn-data", "data directory (the server must be stopped)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	p := defaultPaths(*data, "", "")
	cfg, _, err := loadConfig(p, "", false)
	if err != nil {
		return err
	}
	pub, err := publicKey(p)
	if err != nil {
		return err
	}
	vkey := vkeyFunc(cfg.Origin, pub)
	unlock, err := lockData(p.data)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := local.Open(p.data, local.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	x, err := index.Open(p.index())
	if err != nil {
		return err
	}
	defer x.Close()
	ctx := context.Background()
	names, err := st.Logs(ctx)
	if err != nil {
		return err
	}
	for _, name := range names {
		start := time.Now()
		// The tree's stored hashes and the locator are derived again from the segments, then held to the
		// latest signed checkpoint before anything is indexed.
		lg, err := st.Rebuild(ctx, name)
		if err != nil {
			return err
		}
		if note, err := lg.Checkpoint(ctx); err != nil {
			return err
		} else if note != nil {
			cp, err := ledger.OpenCheckpoint(note, vkey(name))
			if err != nil {
				return fmt.Errorf("%s: latest checkpoint: %v", name, err)
			}
			if cp.Size > lg.Size() {
				return fmt.Errorf("%s: the segments hold %d entries, the signed checkpoint %d", name, lg.Size(), cp.Size)
			}
			if root, err := tlog.TreeHash(int64(cp.Size), lg); err != nil || root != cp.Root {
				return fmt.Errorf("%s: the tree rebuilt from the segments does not match the signed checkpoint of size %d", name, cp.Size)
			}
		}
		if err := x.Reset(name); err != nil {
			return err
		}
		if err := x.CatchUp(ctx, name, lg); err != nil {
			return fmt.Errorf("reindex %s: %w", name, err)
		}
		fmt.Fprintf(stdout, "%s: %d entries: tree hashes rebuilt and indexed in %s\n", name, lg.Size(), time.Since(start).Round(time.Millisecond))
	}
	return nil
}
