package event

import (
	"bytes"
	"slices"
	"testing"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/cairn-ai/cairn/internal/canon"
)

// refInput decodes the client form with the reference decoder, as an oracle for scanInput.
type refInput struct {
	ID         string         `json:"id,omitzero"`
	Type       string         `json:"type"`
	Time       string         `json:"time,omitzero"`
	Model      *Model         `json:"model,omitzero"`
	Deployment string         `json:"deployment,omitzero"`
	Refs       []string       `json:"refs,omitzero"`
	Attrs      jsontext.Value `json:"attrs,omitzero"`
	Payload    jsontext.Value `json:"payload,omitzero"`
}

// FuzzScanInput: whatever the single-pass scanner accepts, the reference decoder accepts with the same values.
func FuzzScanInput(f *testing.F) {
	f.Add([]byte(`{"id":"x","type":"inference","time":"t","model":{"name":"m","version":"1","digest":"d"},"deployment":"p","refs":["a","b\"c"],"attrs":{"x":[1,{"y":"}"}]},"payload":{"output":{"a":"\\u0000"}}}`))
	f.Add([]byte(`{"type":"a\\nb","model":{"name":"\\"","version":""}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := canon.Append(nil, raw)
		if err != nil {
			return
		}
		var got input
		if scanInput(c, &got) != nil {
			return
		}
		var want refInput
		if err := json.Unmarshal(c, &want, json.RejectUnknownMembers(true)); err != nil {
			t.Fatalf("scanner accepted what the reference decoder refuses (%v): %s", err, c)
		}
		if got.ID != want.ID || got.Type != want.Type || got.Time != want.Time || got.Deployment != want.Deployment ||
			!slices.Equal(got.Refs, want.Refs) || !bytes.Equal(got.Attrs, want.Attrs) || !bytes.Equal(got.Payload, want.Payload) ||
			(got.Model == nil) != (want.Model == nil) || (got.Model != nil && *got.Model != *want.Model) {
			t.Fatalf("scanner and reference decoder disagree on %s:\n got %+v\nwant %+v", c, got, want)
		}
	})
}

func TestHasMember(t *testing.T) {
	for obj, want := range map[string]bool{
		`{"output":1}`:                    true,
		`{"a":{"output":1}}`:              false,
		`{"a":"\"output\":","output":[]}`: true,
		`{"a":"output"}`:                  false,
		`{}`:                              false,
	} {
		if hasMember([]byte(obj), "output") != want {
			t.Errorf("hasMember(%s) != %v", obj, want)
		}
	}
}
