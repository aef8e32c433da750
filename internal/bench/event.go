package bench

import (
	"time"

	"github.com/cairn-ai/cairn/internal/event"
)

// The benchmark event is a realistic inference record as a client SDK sends it: about 1 KiB of compact JSON
// with a client-chosen UUIDv7 (an idempotency key), the model and deployment, non-personal attrs, and a payload
// holding the data subject's id, the input features and the output, which Cairn seals.
//
// Events are built from a template by overwriting fixed-width fields (id, time, subject, request id, a few
// numbers), so generating one costs well under a microsecond and every event differs.
const eventTemplate = `{"id":"00000000-0000-7000-8000-000000000000","type":"inference",` +
	`"time":"2026-01-01T00:00:00.000000Z",` +
	`"model":{"name":"credit-scoring-gbm","version":"4.2.1","digest":"sha256:3b0f1c9e2d7a4c6b8e5f1a2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3"},` +
	`"deployment":"prod-eu-west-1",` +
	`"attrs":{"confidence":0.8731,"latency_ms":12.4,"request_id":"req_0000000000000000","input_digest":"sha256:8f14e45fceea167a5a36dedd4bea2543c3a1b8f0e5d6c7b8a9f0e1d2c3b4a596","human_review_required":false,"risk_score":0.231,"purpose_code":"credit-decision"},` +
	`"payload":{"subject":"applicant-0000000000",` +
	`"input":{"income":54000,"age_band":"35-44","employment_years":7,"debt_to_income":0.31,"loan_amount":25000,"term_months":60,"postcode_prefix":"D-101","existing_loans":2,"credit_history_months":144,"missed_payments_24m":0,"bureau_score":712,"features":[0.12,0.87,0.33,0.05,0.91,0.44,0.27,0.68]},` +
	`"output":{"decision":"approve","score":0.7731,"limit":25000,"apr":0.0649,"reasons":["R01 stable income","R07 low utilisation","R12 long credit history"]}}}`

// Field offsets in eventTemplate, found once.
var (
	offID      = indexAfter(eventTemplate, `"id":"`)
	offTime    = indexAfter(eventTemplate, `"time":"`)
	offReq     = indexAfter(eventTemplate, `"request_id":"req_`)
	offSubject = indexAfter(eventTemplate, `"subject":"applicant-`)
)

func indexAfter(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i + len(sub)
		}
	}
	panic("bench: template lacks " + sub)
}

const timeLayout = "2006-01-02T15:04:05.000000Z"

// EventSize is the size in bytes of one benchmark event's JSON.
const EventSize = len(eventTemplate)

// AppendEvent appends one benchmark event for sequence number seq, stamped with now, to dst. Its id is a fresh
// UUIDv7 for now, unless withID is false (then the server chooses the id).
func AppendEvent(dst []byte, seq uint64, now time.Time, withID bool) []byte {
	start := len(dst)
	if withID {
		dst = append(dst, eventTemplate...)
		var idb [36]byte
		id := event.NewV7(now)
		copy(dst[start+offID:], id.AppendText(idb[:0]))
	} else {
		// Drop the id member entirely: `"id":"<36>",` is 44 bytes after the opening brace.
		dst = append(dst, '{')
		dst = append(dst, eventTemplate[offID+38:]...)
	}
	b := dst[start:]
	shift := 0
	if !withID {
		shift = offID + 38 - 1
	}
	var tb [64]byte
	copy(b[offTime-shift:], now.UTC().AppendFormat(tb[:0], timeLayout))
	putDigits(b[offReq-shift:offReq-shift+16], seq)
	putDigits(b[offSubject-shift:offSubject-shift+10], seq%1_000_000_000)
	return dst
}

// putDigits writes v as zero-padded decimal filling b.
func putDigits(b []byte, v uint64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}

// AppendBatch appends a JSON array of n benchmark events; it returns the body and the bytes of event JSON in it
// (the "client JSON" that storage overhead is measured against).
func AppendBatch(dst []byte, n int, seq uint64, now time.Time, withID bool) ([]byte, int) {
	dst = append(dst, '[')
	ev := 0
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		k := len(dst)
		dst = AppendEvent(dst, seq+uint64(i), now, withID)
		ev += len(dst) - k
	}
	return append(dst, ']'), ev
}

// smallTemplate is a minimal valid event (about 80 bytes), used to grow a log to millions of leaves quickly
// for proof benchmarks: proofs depend on the tree, not on event size.
const smallTemplate = `{"type":"anomaly","attrs":{"kind":"k0000000000"}}`

// AppendSmallEvent appends a small event for seq to dst.
func AppendSmallEvent(dst []byte, seq uint64) []byte {
	start := len(dst)
	dst = append(dst, smallTemplate...)
	off := start + len(`{"type":"anomaly","attrs":{"kind":"k`)
	putDigits(dst[off:off+10], seq)
	return dst
}
