package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// fixedTransport answers every request with the same OIP response, in memory: the benchmarks below measure the
// proxy's own work per call (parsing, the event, the spool or the ledger), not the network.
type fixedTransport struct{}

func (fixedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	io.Copy(io.Discard, r.Body)
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(oipResponse)), ContentLength: int64(len(oipResponse)), Request: r}, nil
}

func benchProxy(b *testing.B, policy string) {
	l := testLedger(b, "")
	sp, err := OpenSpool(b.TempDir(), testSpoolKey(), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	rec := NewRecorder(&LedgerSink{Ledger: l, System: "credit", Actor: "bench"}, sp, policy, nil)
	defer rec.Close()
	up, _ := url.Parse("http://model.invalid")
	p, err := New(Config{Upstream: up, Transport: fixedTransport{}}, rec)
	if err != nil {
		b.Fatal(err)
	}
	body := `{"id":"b","inputs":[{"name":"predict","shape":[1,4],"datatype":"FP64","data":[[5.1,3.5,1.4,0.2]]}]}`
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest("POST", "/v2/models/iris/infer", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			p.ServeHTTP(w, r)
			if w.Code != 200 {
				b.Fatalf("status %d", w.Code)
			}
		}
	})
}

// BenchmarkProxySpool: the proxy's work per call under the spool policy (the spool write is on the call's path;
// delivery to the ledger runs beside it).
func BenchmarkProxySpool(b *testing.B) { benchProxy(b, SpoolPolicy) }

// BenchmarkProxyFailClosed: the same, waiting for the ledger's durable commit before the response is released.
func BenchmarkProxyFailClosed(b *testing.B) { benchProxy(b, FailClosed) }
