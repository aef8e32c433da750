package event_test

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/canon"
	"github.com/cairn-ai/cairn/internal/event"
)

var now = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func parse(raw string) (*event.Event, error) {
	return event.Parse(0, []byte(raw), now, event.DefaultLimits, false)
}

func TestParseValid(t *testing.T) {
	ev, err := parse(`{"id":"01a2299e-4e91-7be0-a590-7c058d374335","type":"inference","time":"2026-11-29T11:00:00+01:00",
		"model":{"version":"3","name":"credit"},"deployment":"prod","refs":["01a2299e-4e91-7be0-a590-7c058d374336"],
		"attrs":{"latency_ms":12,"confidence":0.93},"payload":{"subject":"x","output":{"score":712}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if !ev.IDGiven || ev.ID.String() != "01a2299e-4e91-7be0-a590-7c058d374335" || ev.Model.Name != "credit" {
		t.Errorf("parsed %+v", ev)
	}
	if !ev.Time.Equal(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("time = %v", ev.Time)
	}
	if string(ev.Attrs) != `{"confidence":0.93,"latency_ms":12}` {
		t.Errorf("attrs not canonical: %s", ev.Attrs)
	}
	if string(ev.Payload) != `{"output":{"score":712},"subject":"x"}` {
		t.Errorf("payload not canonical: %s", ev.Payload)
	}
	// The canonical client event does not depend on member order or whitespace.
	ev2, _ := parse(`{"payload":{"output":{"score":712},"subject":"x"},"attrs":{"confidence":0.93,"latency_ms":12},"refs":["01a2299e-4e91-7be0-a590-7c058d374336"],"deployment":"prod","model":{"name":"credit","version":"3"},"time":"2026-11-29T11:00:00+01:00","type":"inference","id":"01a2299e-4e91-7be0-a590-7c058d374335"}`)
	if string(ev.Canonical) != string(ev2.Canonical) {
		t.Errorf("canonical forms differ:\n%s\n%s", ev.Canonical, ev2.Canonical)
	}
	// No id: the server makes a UUIDv7, not an idempotency key.
	ev3, err := parse(`{"type":"inference","model":{"name":"m","version":"1"},"attrs":{"error_code":"timeout"}}`)
	if err != nil || ev3.IDGiven || ev3.ID.Version() != 7 || !ev3.Time.Equal(now) {
		t.Errorf("server id: %+v %v", ev3, err)
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ name, raw, field, reason string }{
		{"malformed", `{"type":`, "", ""},
		{"not an object", `[1]`, "", ""},
		{"duplicate member", `{"type":"inference","type":"inference"}`, "", "duplicate"},
		{"case variant", `{"type":"inference","Type":"inference"}`, "", ""},
		{"case variant in payload", `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"Name":"a","name":"b","output":1}}`, "/payload", ""},
		{"unknown top-level", `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":1},"subject":"alice"}`, "/subject", "unknown"},
		{"missing type", `{"model":{"name":"m","version":"1"}}`, "/type", "missing"},
		{"unknown type", `{"type":"infer"}`, "/type", "unknown"},
		{"server-only type", `{"type":"system.registered"}`, "/type", "recorded by Cairn"},
		{"wrong type", `{"type":"inference","model":"m"}`, "/model", ""},
		{"missing model", `{"type":"inference","payload":{"output":1}}`, "/model", "missing"},
		{"missing model version", `{"type":"inference","model":{"name":"m"},"payload":{"output":1}}`, "/model/version", "missing"},
		{"missing output", `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"input":1}}`, "", "one of"},
		{"unknown attr", `{"type":"inference","model":{"name":"m","version":"1"},"attrs":{"applicant_name":"Bob"},"payload":{"output":1}}`, "/attrs/applicant_name", "not an attribute"},
		{"attr kind", `{"type":"inference","model":{"name":"m","version":"1"},"attrs":{"confidence":"high"},"payload":{"output":1}}`, "/attrs/confidence", "number"},
		{"attr enum", `{"type":"oversight","refs":["01a2299e-4e91-7be0-a590-7c058d374335"],"attrs":{"action":"ignored"}}`, "/attrs/action", "one of"},
		{"negative latency", `{"type":"inference","model":{"name":"m","version":"1"},"attrs":{"latency_ms":-1},"payload":{"output":1}}`, "/attrs/latency_ms", "negative"},
		{"missing refs", `{"type":"oversight","attrs":{"action":"overridden"}}`, "/refs", "missing"},
		{"bad ref", `{"type":"oversight","refs":["x"],"attrs":{"action":"overridden"}}`, "/refs/0", ""},
		{"bad id", `{"id":"123","type":"inference","model":{"name":"m","version":"1"},"payload":{"output":1}}`, "/id", ""},
		{"uuid v4", `{"id":"9b2f7c1e-3d4a-4f8b-9c2d-1e3f4a5b6c7d","type":"inference","model":{"name":"m","version":"1"},"payload":{"output":1}}`, "/id", "UUIDv7"},
		{"bad time", `{"type":"inference","time":"yesterday","model":{"name":"m","version":"1"},"payload":{"output":1}}`, "/time", "RFC 3339"},
		{"huge integer", `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":12345678901234567890}}`, "/payload/output", ""},
		{"overflow", `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":1e999}}`, "/payload/output", ""},
		{"invalid utf-8", "{\"type\":\"inference\",\"model\":{\"name\":\"m\xff\",\"version\":\"1\"},\"payload\":{\"output\":1}}", "", ""},
		{"payload not object", `{"type":"inference","model":{"name":"m","version":"1"},"payload":"x"}`, "/payload", "object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(tc.raw)
			var ee *event.Error
			if !errors.As(err, &ee) {
				t.Fatalf("got %v, want an *event.Error", err)
			}
			if tc.field != "" && !strings.HasPrefix(ee.Field, tc.field) {
				t.Errorf("field = %q, want %q (%v)", ee.Field, tc.field, err)
			}
			if !strings.Contains(ee.Reason, tc.reason) {
				t.Errorf("reason = %q, want it to mention %q", ee.Reason, tc.reason)
			}
			if strings.Contains(err.Error(), "Bob") || strings.Contains(err.Error(), "alice") {
				t.Errorf("error quotes a personal value: %v", err)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	count := func(body string) (int, error) {
		n := 0
		err := event.Split([]byte(body), event.DefaultLimits, func(i int, raw []byte) error {
			if i != n {
				t.Errorf("index %d, want %d", i, n)
			}
			n++
			return nil
		})
		return n, err
	}
	for body, want := range map[string]int{
		`[{"a":1},{"b":2}]`:          2,
		" \n[ {\"a\":1} ] \n":        1,
		"{\"a\":1}\n{\"b\":2}\n":     2,
		"{\"a\":1}\r\n{\"b\":2}":     2,
		"{\"a\":1}\n\n{\"b\":2}\n\n": 2,
	} {
		if n, err := count(body); err != nil || n != want {
			t.Errorf("Split(%q) = %d, %v; want %d", body, n, err, want)
		}
	}
	for _, body := range []string{``, `[]`, `[{"a":1}`, `[{"a":1}] x`, `{"a":1} [`, `[1]`, `"x"`, `{"a":1,"a":2}`} {
		if _, err := count(body); err == nil {
			t.Errorf("Split(%q) accepted", body)
		}
	}
	lim := event.Limits{MaxEvents: 2, MaxEventBytes: 20, MaxRefs: 1}
	if err := event.Split([]byte(`[{},{},{}]`), lim, func(int, []byte) error { return nil }); err == nil {
		t.Errorf("more events than the limit accepted")
	}
	if err := event.Split([]byte(`[{"long":"aaaaaaaaaaaaaaaaaaaaaaaa"}]`), lim, func(int, []byte) error { return nil }); err == nil {
		t.Errorf("an event over the size limit accepted")
	}
}

// TestGoldenEncodings pins the leaf and envelope encodings: any change breaks every stored log's verification.
func TestGoldenEncodings(t *testing.T) {
	id, _ := event.ParseUUID("01a2299e-4e91-7be0-a590-7c058d374335")
	ref, _ := event.ParseUUID("01a2299e-4e91-7be0-a590-7c058d374336")
	rec := time.Date(2026, 11, 29, 23, 8, 39, 123456789, time.UTC).UnixNano()
	var d [32]byte
	for i := range d {
		d[i] = byte(i)
	}
	env := event.Envelope{
		ID: id, System: "credit-scoring", Type: "inference", Time: time.Date(2026, 11, 29, 23, 8, 39, 0, time.UTC),
		Actor: "svc-ingest", Model: &event.Model{Name: "credit", Version: "3", Digest: "sha256:ab"},
		Deployment: "prod", Refs: []event.UUID{ref}, Attrs: []byte(`{"confidence":0.93}`),
		Payload: &event.PayloadRef{Digest: d, Size: 100, Key: "credit-scoring/log/2026-11", KeyCommit: d},
	}
	b := env.AppendHead(nil)
	b = event.AppendRecorded(b, rec)
	b = env.AppendTail(b)
	salt := []byte("0123456789abcdef")
	leaf := event.Leaf{ID: id, Recorded: rec, Type: "inference", Digest: event.Digest(salt, b)}
	got := string(b) + "\n" + string(leaf.AppendLeaf(nil)) + "\n"
	golden := "testdata/encodings.golden"
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("encodings changed:\n got %s\nwant %s", got, want)
	}
	// The leaf parses back exactly, and a non-canonical spelling does not.
	l, err := event.ParseLeaf(leaf.AppendLeaf(nil))
	if err != nil || *l != leaf {
		t.Errorf("ParseLeaf round trip: %+v, %v", l, err)
	}
	spaced := strings.Replace(string(leaf.AppendLeaf(nil)), `,"v":1`, `, "v":1`, 1)
	if _, err := event.ParseLeaf([]byte(spaced)); err == nil {
		t.Errorf("a non-canonical leaf parsed")
	}
	// The hand-built encodings are RFC 8785 canonical: the independent canonicaliser leaves them unchanged.
	for _, enc := range [][]byte{b, leaf.AppendLeaf(nil)} {
		if c, err := canon.Append(nil, enc); err != nil || string(c) != string(enc) {
			t.Errorf("not canonical JSON: %s (%v)", enc, err)
		}
	}
	// With every optional member set, the hand-built order is still canonical.
	full := env
	full.Policy, full.InputDigest = "sha256:0123456789ab", "hmac-sha256:00ff"
	fb := event.AppendRecorded(full.AppendHead(nil), rec)
	fb = full.AppendTail(fb)
	if c, err := canon.Append(nil, fb); err != nil || string(c) != string(fb) {
		t.Errorf("envelope with policy and input digest not canonical: %s", fb)
	}
	if _, err := event.ParseEnvelope(b); err != nil {
		t.Errorf("ParseEnvelope: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"type":"inference","model":{"name":"m","version":"1"},"attrs":{"confidence":0.5},"payload":{"output":1}}`))
	f.Add([]byte(`[{"type":"oversight","refs":["01a2299e-4e91-7be0-a590-7c058d374335"],"attrs":{"action":"overridden"}}]`))
	f.Add([]byte("{\"type\":\"anomaly\",\"attrs\":{\"kind\":\"drift\"}}\n{\"type\":\"notice\",\"attrs\":{\"notice_type\":\"x\"}}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		event.Split(body, event.DefaultLimits, func(i int, raw []byte) error {
			ev, err := event.Parse(i, raw, now, event.DefaultLimits, false)
			if err != nil {
				var ee *event.Error
				if !errors.As(err, &ee) {
					t.Fatalf("Parse error of type %T: %v", err, err)
				}
				return nil
			}
			// An accepted event's canonical form is accepted again, to the same bytes.
			ev2, err := event.Parse(i, ev.Canonical, now, event.DefaultLimits, false)
			if err != nil || string(ev2.Canonical) != string(ev.Canonical) {
				t.Fatalf("canonical form not stable: %v", err)
			}
			return nil
		})
	})
}

func FuzzParseLeaf(f *testing.F) {
	f.Add([]byte(`{"digest":"sha256:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f","id":"01a2299e-4e91-7be0-a590-7c058d374335","recorded":"2026-11-29T23:08:39.123456789Z","type":"inference","v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := event.ParseLeaf(b)
		if err != nil {
			return
		}
		if string(l.AppendLeaf(nil)) != string(b) {
			t.Fatalf("accepted leaf does not re-encode to itself")
		}
	})
}
