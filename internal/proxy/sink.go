package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cairn-ai/cairn/client"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
)

// Sink appends events (client-form JSON objects) to one system's log, durably and as one unit: when Append
// returns nil every event is durable. An error is temporary (the ledger is unreachable, busy or closed: retry
// later) unless it is a *Rejected.
type Sink interface {
	Append(ctx context.Context, events [][]byte) error
}

// Rejected is an event the ledger refused for its content; retrying it cannot help.
type Rejected struct {
	Index  int // position in the batch
	Field  string
	Reason string
}

func (e *Rejected) Error() string {
	return fmt.Sprintf("event %d rejected: %s %s", e.Index, e.Field, e.Reason)
}

// LedgerSink appends to a ledger in the same process.
type LedgerSink struct {
	Ledger *ledger.Ledger
	System string
	Actor  string // the principal recorded as the events' actor
}

// Append implements Sink.
func (s *LedgerSink) Append(ctx context.Context, events [][]byte) error {
	lg, err := s.Ledger.Log(s.System)
	if err != nil {
		return err
	}
	now := time.Now()
	items := make([]*ledger.Prepared, 0, len(events))
	for i, raw := range events {
		ev, err := event.Parse(i, raw, now, event.DefaultLimits, false)
		if err == nil {
			var p *ledger.Prepared
			if p, err = lg.Prepare(ev, s.Actor); err == nil {
				items = append(items, p)
				continue
			}
		}
		var ee *event.Error
		if errors.As(err, &ee) {
			return &Rejected{Index: i, Field: ee.Field, Reason: ee.Reason}
		}
		return err
	}
	_, err = lg.Append(ctx, items)
	var ce *ledger.ConflictError
	if errors.As(err, &ce) {
		return &Rejected{Index: ce.Event, Field: "/id", Reason: "id already recorded with different content"}
	}
	var ee *event.Error
	if errors.As(err, &ee) {
		return &Rejected{Index: ee.Event, Field: ee.Field, Reason: ee.Reason}
	}
	return err
}

// RemoteSink appends to a Cairn server over HTTP with an ingest token.
type RemoteSink struct {
	Client *client.Client
	System string
}

// Append implements Sink.
func (s *RemoteSink) Append(ctx context.Context, events [][]byte) error {
	_, err := s.Client.AppendRaw(ctx, s.System, bytes.Join(events, []byte("\n")))
	var p *client.Problem
	if errors.As(err, &p) {
		switch p.Status {
		case http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
			r := &Rejected{Reason: p.Title}
			if len(p.Errors) > 0 {
				if p.Errors[0].Event != nil {
					r.Index = *p.Errors[0].Event
				}
				r.Field, r.Reason = p.Errors[0].Field, p.Errors[0].Reason
			}
			return r
		}
	}
	return err
}
