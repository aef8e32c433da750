// Package docgen generates the documents an auditor or notified body asks for — model card, evaluation report,
// datasheet, Annex IV technical documentation, EU declaration of conformity, instructions for use, post-market
// monitoring summary, audit reconstruction report — from what one system's log holds at a given moment, and only
// from that.
//
// A document is a pure function of the log state it was generated against: the entries recorded at or before the
// requested time, which are a prefix of the log. Every statement drawn from the log cites the event id and leaf
// index it comes from; the document ends with a checkpoint of exactly that prefix, signed with the log's key, so
// the same state and time give the same bytes, and a reader can prove each citation with an inclusion proof.
// Facts the log cannot know come from the system definition's provider_info; what is missing is reported with the
// event or definition member that would supply it, never invented.
//
// docgen reads envelopes (non-personal facts) and system definitions, never an event's personal payload, so a
// document holds no personal data. It records nothing itself: callers record the document event.
package docgen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cairn-ai/cairn/internal/lifecycle"
)

// Document kinds, as `cairn docs generate KIND` and the document event's attrs.kind name them.
const (
	KindModelCard      = "model-card"
	KindEvaluation     = "evaluation-report"
	KindDatasheet      = "datasheet"
	KindAnnexIV        = "technical-documentation"
	KindDeclaration    = "declaration-of-conformity"
	KindInstructions   = "instructions-for-use"
	KindMonitoring     = "monitoring-summary"
	KindReconstruction = "reconstruction"
)

// Kinds lists every document kind.
var Kinds = []string{KindModelCard, KindEvaluation, KindDatasheet, KindAnnexIV, KindDeclaration, KindInstructions,
	KindMonitoring, KindReconstruction}

// Formats a document renders to. PDF is printed from the HTML by headless Chromium; its digest is the HTML's.
const (
	FormatMarkdown = "md"
	FormatHTML     = "html"
	FormatJSON     = "json"
	FormatPDF      = "pdf"
)

// Formats lists every format.
var Formats = []string{FormatMarkdown, FormatHTML, FormatJSON, FormatPDF}

// Schema names the JSON encoding of a document.
const Schema = "cairn-document/v1"

// ErrRequest: the request names an unknown kind or format, or something the log does not hold.
var ErrRequest = errors.New("bad document request")

// Request says which document to generate.
type Request struct {
	Kind string
	// ModelVersion is "name@version", or a version that only one model has; "" means the version registered last.
	ModelVersion string
	// At is the moment whose log state the document reflects: entries recorded at or before it.
	At time.Time
	// From and To bound the monitoring summary's period by event time [From, To); zero: the 30 days before At.
	From, To time.Time
	// Event is the event a reconstruction report is about: its id or leaf index.
	Event string
}

// Document is a generated document. Its JSON encoding is the json format.
type Document struct {
	Schema       string    `json:"schema"`
	Kind         string    `json:"kind"`
	Title        string    `json:"title"`
	System       string    `json:"system"`
	SystemName   string    `json:"system_name"`
	ModelVersion string    `json:"model_version,omitempty"`
	At           string    `json:"at"`
	Period       *Period   `json:"period,omitempty"`
	Summary      []Item    `json:"summary"`
	Sections     []Section `json:"sections"`
	// Checkpoint is the log state the document was generated against; it comes last in every format.
	Checkpoint Checkpoint `json:"checkpoint"`

	model   lifecycle.Version
	subject string // the event a reconstruction is about
}

// Period is a time window [From, To).
type Period struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Section is one numbered section.
type Section struct {
	Number   string    `json:"number"`
	Heading  string    `json:"heading"`
	Items    []Item    `json:"items,omitempty"`
	Tables   []Table   `json:"tables,omitempty"`
	Sections []Section `json:"sections,omitempty"`
}

// Title is the section's heading line as every format shows it: number and heading.
func (s *Section) Title() string { return s.Number + " " + s.Heading }

// Item is one statement. A statement drawn from the log cites the events it rests on; a gap says what is missing
// and what would supply it.
type Item struct {
	Label   string   `json:"label,omitempty"`
	Text    string   `json:"text,omitempty"`
	Cites   []Cite   `json:"cites,omitempty"`
	Missing *Missing `json:"missing,omitempty"`
}

// Missing is a gap: what the log does not say, and what would supply it.
type Missing struct {
	What     string `json:"what"`
	Supplied string `json:"supplied_by"`
}

// Cite names an event of the log: its id, its leaf index, and the digest its leaf commits to (SHA-256 of the
// salted envelope), so a citation changes when the event it cites does.
type Cite struct {
	Event  string `json:"event"`
	Leaf   uint64 `json:"leaf"`
	Digest string `json:"digest"`
}

// Table is a table of facts; each row cites the events it rests on.
type Table struct {
	Caption string   `json:"caption"`
	Columns []string `json:"columns"`
	Rows    []Row    `json:"rows"`
}

// Row is one table row.
type Row struct {
	Cells []string `json:"cells"`
	Cites []Cite   `json:"cites,omitempty"`
}

// Checkpoint is the signed checkpoint of the log state a document was generated against.
type Checkpoint struct {
	Origin   string `json:"origin"`
	TreeSize uint64 `json:"tree_size"`
	// Note is the C2SP signed checkpoint; VKey the note verifier key it verifies with.
	Note string `json:"note"`
	VKey string `json:"vkey"`
}

// Generate builds a document from the log state at req.At.
func Generate(ctx context.Context, lg Log, vkey string, req Request) (*Document, error) {
	if !slices.Contains(Kinds, req.Kind) {
		return nil, fmt.Errorf("%w: unknown kind %q (want one of %v)", ErrRequest, req.Kind, Kinds)
	}
	if req.At.IsZero() {
		return nil, fmt.Errorf("%w: no time given", ErrRequest)
	}
	at := req.At.UTC()
	from, to := req.From, req.To
	if to.IsZero() {
		to = at
	}
	if from.IsZero() {
		from = to.AddDate(0, 0, -30)
	}
	if !from.Before(to) {
		return nil, fmt.Errorf("%w: the period's start is not before its end", ErrRequest)
	}
	s, err := load(ctx, lg, at, from.UTC(), to.UTC(), req.Event, req.Kind == KindMonitoring)
	if err != nil {
		return nil, err
	}
	d := &Document{Schema: Schema, Kind: req.Kind, System: s.system, SystemName: s.def().def.Name,
		At: at.Format(time.RFC3339Nano)}
	if req.Kind != KindMonitoring && req.Kind != KindReconstruction {
		if d.model, err = s.resolve(req.ModelVersion); err != nil {
			return nil, err
		}
		if d.model != (lifecycle.Version{}) {
			d.ModelVersion = d.model.String()
		}
	}
	b := &builder{s: s, d: d}
	switch req.Kind {
	case KindModelCard:
		b.modelCard()
	case KindEvaluation:
		b.evaluationReport()
	case KindDatasheet:
		b.datasheet()
	case KindAnnexIV:
		b.annexIV()
	case KindDeclaration:
		b.declaration()
	case KindInstructions:
		b.instructions()
	case KindMonitoring:
		d.Period = &Period{From: s.from.Format(time.RFC3339Nano), To: s.to.Format(time.RFC3339Nano)}
		b.monitoring()
	case KindReconstruction:
		if err := b.reconstruction(req.Event); err != nil {
			return nil, err
		}
	}
	d.Checkpoint = Checkpoint{Origin: originOf(s.note), TreeSize: s.size, Note: string(s.note), VKey: vkey}
	return d, nil
}

// Digest is the digest a document is recorded and signed under: SHA-256 of its rendered bytes, or of its HTML for
// a PDF.
func Digest(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func originOf(note []byte) string {
	for i, c := range note {
		if c == '\n' {
			return string(note[:i])
		}
	}
	return ""
}

// Headings lists every section title of a document, depth first, as every format shows them.
func (d *Document) Headings() []string {
	var out []string
	var walk func([]Section)
	walk = func(ss []Section) {
		for i := range ss {
			out = append(out, ss[i].Title())
			walk(ss[i].Sections)
		}
	}
	walk(d.Sections)
	return out
}
