package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/retention"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/system"
)

// Problem is an RFC 9457 problem detail. Errors lists the fields at fault.
type Problem struct {
	Type   string         `json:"type"`
	Title  string         `json:"title"`
	Status int            `json:"status"`
	Detail string         `json:"detail,omitempty"`
	Errors []ProblemField `json:"errors,omitempty"`
}

// ProblemField names one field at fault: the event's position in the request and a JSON Pointer.
type ProblemField struct {
	Event  *int   `json:"event,omitempty"`
	ID     string `json:"id,omitempty"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

func writeProblem(w http.ResponseWriter, p Problem) {
	if p.Type == "" {
		p.Type = "about:blank"
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}

// writeError maps an error to its HTTP status. This is the one place where that mapping lives.
func writeError(w http.ResponseWriter, err error) {
	var ee *event.Error
	var fe *system.FieldError
	var ce *ledger.ConflictError
	var mbe *http.MaxBytesError
	var tfe *TokenFieldError
	switch {
	case errors.As(err, &tfe):
		writeProblem(w, Problem{Type: "https://cairn.dev/problems/invalid-token-request", Title: "Invalid token request", Status: http.StatusUnprocessableEntity,
			Detail: tfe.Error(), Errors: []ProblemField{{Field: tfe.Field, Reason: tfe.Reason}}})
	case errors.Is(err, retention.ErrHold):
		writeProblem(w, Problem{Type: "https://cairn.dev/problems/invalid-hold", Title: "Invalid legal hold", Status: http.StatusUnprocessableEntity, Detail: err.Error()})
	case errors.Is(err, retention.ErrNoHold):
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: err.Error()})
	case errors.Is(err, ErrUnknownToken):
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: err.Error()})
	case errors.Is(err, ErrLastAdmin):
		writeProblem(w, Problem{Type: "https://cairn.dev/problems/last-admin", Title: "Last admin token", Status: http.StatusConflict, Detail: err.Error()})
	case errors.As(err, &ee):
		f := ProblemField{Field: ee.Field, Reason: ee.Reason, ID: ee.ID}
		if ee.Event >= 0 {
			f.Event = &ee.Event
		}
		writeProblem(w, Problem{Type: "https://cairn.dev/problems/invalid-event", Title: "Invalid event", Status: http.StatusUnprocessableEntity, Detail: ee.Error(), Errors: []ProblemField{f}})
	case errors.As(err, &fe):
		writeProblem(w, Problem{Type: "https://cairn.dev/problems/invalid-definition", Title: "Invalid system definition", Status: http.StatusUnprocessableEntity, Detail: fe.Error(), Errors: []ProblemField{{Field: fe.Field, Reason: fe.Reason}}})
	case errors.As(err, &ce):
		writeProblem(w, Problem{Type: "https://cairn.dev/problems/id-conflict", Title: "Event id already used", Status: http.StatusConflict, Detail: ce.Error(), Errors: []ProblemField{{Event: &ce.Event, ID: ce.ID.String(), Field: "/id", Reason: "already recorded with different content"}}})
	case errors.As(err, &mbe):
		writeProblem(w, Problem{Title: "Request too large", Status: http.StatusRequestEntityTooLarge, Detail: "the body is over the limit of " + strconv.FormatInt(mbe.Limit, 10) + " bytes"})
	case errors.Is(err, ledger.ErrUnknownSystem), errors.Is(err, store.ErrNotFound):
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: err.Error()})
	case errors.Is(err, ledger.ErrRange):
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: "not within the published tree"})
	case errors.Is(err, ledger.ErrBusy):
		w.Header().Set("Retry-After", "1")
		writeProblem(w, Problem{Status: http.StatusServiceUnavailable, Detail: "the log's queue is full; retry after a second"})
	case errors.Is(err, ledger.ErrClosed):
		w.Header().Set("Retry-After", "5")
		writeProblem(w, Problem{Status: http.StatusServiceUnavailable, Detail: "shutting down"})
	default:
		// Errors carry names, paths and ids, never keys, tokens or payload values, so they can be logged.
		slog.Error("request failed", "err", err)
		writeProblem(w, Problem{Status: http.StatusInternalServerError, Detail: "internal error; see the server log"})
	}
}

func badRequest(w http.ResponseWriter, field, reason string) {
	writeProblem(w, Problem{Status: http.StatusBadRequest, Detail: field + ": " + reason, Errors: []ProblemField{{Field: field, Reason: reason}}})
}
