package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cairn-ai/cairn/internal/atomicfile"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
)

// Administration done offline — with the server stopped, such as a KEK rotation — cannot append to _admin at the
// time, since the ledger is not running. It leaves a pending record in DATA/admin-pending/, and the server appends
// every pending record to _admin when it starts, before it serves a request, then removes it. A crash between the
// append and the removal records it twice (at least once, never lost): the record says so by its own id, in attrs.

type pendingAdmin struct {
	Actor string          `json:"actor"`
	Event json.RawMessage `json:"event"` // an admin event, as AppendServer takes it
}

func (p paths) adminPending() string { return filepath.Join(p.data, "admin-pending") }

// queueAdmin leaves an admin event for the server to record at its next start. attrs are the event's clear
// attributes (non-personal facts only).
func queueAdmin(p paths, actor string, attrs map[string]any) error {
	// Named by a UUIDv7, so records are recorded in the order they were made.
	id := event.NewV7(time.Now())
	attrs["record_id"] = id.String()
	raw, err := json.Marshal(map[string]any{"type": "admin", "time": time.Now().UTC().Format(time.RFC3339Nano), "attrs": attrs})
	if err != nil {
		return err
	}
	b, _ := json.Marshal(pendingAdmin{Actor: actor, Event: raw})
	if err := os.MkdirAll(p.adminPending(), 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(p.adminPending(), id.String()+".json"), b, 0o600); err != nil {
		return fmt.Errorf("queue _admin record: %w", err)
	}
	return nil
}

// recordPendingAdmin appends the pending records to _admin, oldest first, removing each once it is durable.
func recordPendingAdmin(ctx context.Context, p paths, l *ledger.Ledger) (int, error) {
	ents, err := os.ReadDir(p.adminPending())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	names := []string{}
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".json" {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	for i, name := range names {
		path := filepath.Join(p.adminPending(), name)
		b, err := os.ReadFile(path)
		if err != nil {
			return i, err
		}
		var rec pendingAdmin
		if err := json.Unmarshal(b, &rec); err != nil {
			return i, fmt.Errorf("pending _admin record %s is damaged: %w", name, err)
		}
		if _, err := l.AppendServer(ctx, ledger.AdminLog, rec.Event, rec.Actor); err != nil {
			return i, fmt.Errorf("record %s in _admin: %w", name, err)
		}
		if err := os.Remove(path); err != nil {
			return i + 1, err
		}
	}
	return len(names), atomicfile.SyncDir(p.adminPending())
}
