package canon

import (
	"fmt"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

// benchEvent is a realistic ~1 KiB ingested event: compact, members in
// producer order (not sorted), a few escapes, floats and nested objects.
const benchEvent = `{"v":1,"type":"tool.call.completed","id":"01J9ZK3Q7W8X4N2M5B6C7D8E9F","ts":"2025-06-14T09:21:33.418207Z",` +
	`"session":{"id":"sess_7f3a9c2e41b8","agent":"cairn-coder","model":"large-2025-05","turn":42},` +
	`"actor":{"kind":"agent","name":"planner","pid":48213,"host":"build-07.internal"},` +
	`"payload":{"tool":"bash","call_id":"call_9d8c7b6a5f4e","args":{"command":"go test ./internal/... -run TestGolden -count=1","timeout_ms":120000,"cwd":"/work/main","env":{"GOFLAGS":"-mod=mod","CGO_ENABLED":"0","HOME":"/root"}},` +
	`"result":{"exit_code":0,"stdout":"ok  \tgithub.com/cairn-ai/cairn/internal/canon\t0.412s\n","stderr":"","truncated":false,"duration_ms":412.77},` +
	`"files_touched":["internal/canon/canon.go","internal/canon/canon_test.go","internal/canon/testdata/numbers.txtar"]},` +
	`"metrics":{"tokens_in":18234,"tokens_out":911,"cost_usd":0.04127,"latency_ms":1834.5,"cache_hit_ratio":0.875},` +
	`"labels":{"env":"dev","team":"infra","priority":"p2","component":"canon","note":"caf\u00e9 \u2014 \"quoted\""},` +
	`"parent":"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","seq":1048576,"ok":true,"retry":null}`

func BenchmarkAppend(b *testing.B) {
	src := []byte(benchEvent)
	dst := make([]byte, 0, 2*len(src))
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = Append(dst[:0], src); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendCanonical measures re-canonicalizing already canonical
// input, as when verifying stored records.
func BenchmarkAppendCanonical(b *testing.B) {
	src, err := Append(nil, []byte(benchEvent))
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, 2*len(src))
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		if dst, err = Append(dst[:0], src); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendWide measures an object too large for the pairwise name
// check: 256 members in reverse order.
func BenchmarkAppendWide(b *testing.B) {
	src := []byte{'{'}
	for i := 255; i >= 0; i-- {
		src = fmt.Appendf(src, `"attribute_%03d":%d,`, i, i)
	}
	src[len(src)-1] = '}'
	dst := make([]byte, 0, 2*len(src))
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = Append(dst[:0], src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendNumber(b *testing.B) {
	var dst []byte
	for b.Loop() {
		dst, _ = AppendNumber(dst[:0], 1834.5)
	}
}

func BenchmarkOracle(b *testing.B) {
	src := []byte(benchEvent)
	v := make(jsontext.Value, 0, 2*len(src))
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		v = append(v[:0], src...)
		if err := v.Canonicalize(); err != nil {
			b.Fatal(err)
		}
	}
}
