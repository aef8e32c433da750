// Package proxy is Cairn's inference capture proxy: a reverse proxy in front of a model server that passes
// every request and response through byte for byte and records one inference event per call — the requested
// and served model, inputs and outputs parsed per protocol (Open Inference Protocol v2, MLflow /invocations,
// OpenAI Chat Completions), status, latency, time to first byte, correlation id and traceparent.
//
// It never drops an event silently: under the fail-closed policy a response is released only once its event is
// durable in the ledger (else the caller gets 503 and the refusal is recorded later); under the spool policy
// every event goes through a local spool delivered in order. Streams are passed through chunk by chunk, never
// held back. It never logs a payload value.
package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
)

// Config configures a Proxy.
type Config struct {
	// Upstream is the model server's base URL; a request's path and query are appended to it.
	Upstream *url.URL
	// Protocol is "auto" (detect per route; the default), "oip-v2", "mlflow" or "openai".
	Protocol string
	// Model and ModelVersion name the model when the protocol carries no identity (MLflow /invocations) and
	// stand in for parts a call leaves unknown; "unknown" otherwise.
	Model, ModelVersion string
	// Deployment is recorded as the events' deployment.
	Deployment string
	// MaxBody is the largest request, and under fail-closed the largest response, the proxy holds
	// (default 64 MiB).
	MaxBody int64
	// MaxCapture is the largest input or output recorded as parsed content (default 256 KiB); larger ones are
	// recorded by SHA-256 digest and size.
	MaxCapture int
	// Transport reaches the upstream (default: a keep-alive transport that never compresses on its own).
	Transport http.RoundTripper
	Logger    *slog.Logger
}

// Proxy is the capture proxy's HTTP handler.
type Proxy struct {
	cfg Config
	rec *Recorder
}

// New returns a proxy that records through rec.
func New(cfg Config, rec *Recorder) (*Proxy, error) {
	if cfg.Upstream == nil || cfg.Upstream.Host == "" {
		return nil, errors.New("upstream URL missing")
	}
	switch cfg.Protocol {
	case "", "auto":
		cfg.Protocol = "auto"
	case ProtoOIP, ProtoMLflow, ProtoOpenAI:
	default:
		return nil, fmt.Errorf("unknown protocol %q (auto, oip-v2, mlflow, openai)", cfg.Protocol)
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 64 << 20
	}
	if cfg.MaxCapture == 0 {
		cfg.MaxCapture = 256 << 10
	}
	if cfg.Transport == nil {
		cfg.Transport = &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true, // pass Accept-Encoding and encoded bodies through untouched
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Proxy{cfg: cfg, rec: rec}, nil
}

var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// copyHeader copies end-to-end headers (hop-by-hop ones, and those named in Connection, stay behind).
func copyHeader(dst, src http.Header) {
	drop := map[string]bool{}
	for _, v := range src.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			drop[http.CanonicalHeaderKey(strings.TrimSpace(f))] = true
		}
	}
	for k, vs := range src {
		if drop[k] || isHop(k) {
			continue
		}
		dst[k] = append(dst[k][:0:0], vs...)
	}
}

func isHop(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

// timing of one call.
type timing struct {
	start, firstByte, end time.Time
}

func (t timing) ms(to time.Time) float64 {
	if to.IsZero() {
		return 0
	}
	return float64(to.Sub(t.start).Microseconds()) / 1000
}

// forward sends a request with its body to the upstream, end-to-end headers unchanged.
func (p *Proxy) forward(r *http.Request, body []byte) (*http.Response, error) {
	out, err := p.outRequest(r.Context(), r, body)
	if err != nil {
		return nil, err
	}
	return p.cfg.Transport.RoundTrip(out)
}

func (p *Proxy) outRequest(ctx context.Context, r *http.Request, body []byte) (*http.Request, error) {
	u := *p.cfg.Upstream
	u.Path = strings.TrimRight(u.Path, "/") + r.URL.Path
	u.RawPath = ""
	if p.cfg.Upstream.RawPath != "" || r.URL.RawPath != "" {
		u.RawPath = strings.TrimRight(p.cfg.Upstream.EscapedPath(), "/") + r.URL.EscapedPath()
	}
	u.RawQuery = r.URL.RawQuery
	out, err := http.NewRequestWithContext(ctx, r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	copyHeader(out.Header, r.Header)
	if _, ok := r.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = nil // do not add Go's
	}
	out.ContentLength = int64(len(body))
	if len(body) == 0 && r.ContentLength <= 0 && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		out.Body = nil
	}
	return out, nil
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := timing{start: time.Now()}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.cfg.MaxBody))
	if err != nil {
		problem(w, http.StatusRequestEntityTooLarge, "request body too large or unreadable", "")
		return
	}
	c := &call{}
	if !parserFor(p.cfg.Protocol, r).request(c, r, decoded(r.Header, body)) {
		p.passThrough(w, r, body)
		return
	}
	prs := parserFor(c.proto, r)
	if c.proto == ProtoOpaque {
		prs = opaque{}
	}
	if id := r.Header.Get("X-Request-Id"); id != "" {
		c.correlation = id
	} else if id := r.Header.Get("X-Correlation-Id"); id != "" {
		c.correlation = id
	}
	c.requestDigest = digest(body)
	tp := r.Header.Get("Traceparent")
	ev := &eventBuilder{p: p, c: c, t: &t, traceparent: tp, method: r.Method, path: r.URL.Path,
		reqType: r.Header.Get("Content-Type"), reqSize: len(body)}
	failClosed := p.rec.Policy() == FailClosed

	if failClosed && !p.rec.Available() {
		p.refuse(w, ev)
		return
	}
	// A stream cannot be held back: its request is recorded before the upstream is called, its output after.
	var requestID string
	if c.stream {
		rq := ev.build("request", "", nil)
		requestID = ev.id
		if failClosed {
			if err := p.rec.Commit(r.Context(), rq); err != nil {
				p.refuse(w, ev)
				return
			}
		} else {
			p.rec.Defer(rq)
		}
		ev.id = ""
	}
	resp, err := p.forward(r, body)
	if err != nil {
		t.end = time.Now()
		outcome := "upstream_unreachable"
		if r.Context().Err() != nil {
			outcome = "client_cancelled"
		}
		c.errorCode = outcome
		p.finish(w, ev, outcome, requestID, func() { problem(w, http.StatusBadGateway, "the model server is unreachable", "") })
		return
	}
	defer resp.Body.Close()
	t.firstByte = time.Now()
	ev.status = resp.StatusCode
	ev.respType = resp.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ev.respType)
	streamed := mt == "text/event-stream"

	if failClosed && !(streamed && c.stream) {
		// Hold the response until its event is durable.
		rb, err := io.ReadAll(io.LimitReader(resp.Body, p.cfg.MaxBody+1))
		t.end = time.Now()
		if err != nil || int64(len(rb)) > p.cfg.MaxBody {
			c.errorCode = "upstream_response_unreadable"
			p.finish(w, ev, "error_server", requestID, func() {
				problem(w, http.StatusBadGateway, "the model server's response is unreadable or too large to hold", "")
			})
			return
		}
		ev.respSize, ev.respDigest = len(rb), digest(rb)
		if streamed {
			s := prs.streamer()
			if s != nil {
				s.write(decoded(resp.Header, rb))
				s.finish(c)
			}
		} else {
			prs.response(c, resp.StatusCode, resp.Header, decoded(resp.Header, rb))
		}
		p.finish(w, ev, statusOutcome(resp.StatusCode, c), requestID, func() {
			copyHeader(w.Header(), resp.Header)
			w.WriteHeader(resp.StatusCode)
			w.Write(rb)
		})
		return
	}

	// Pass the response through as it arrives, keeping a bounded copy for the record.
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	var s streamer
	if streamed {
		s = prs.streamer()
	}
	h := sha256.New()
	var capture bytes.Buffer
	n, cancelled := p.copyBody(w, resp.Body, streamed, func(b []byte) {
		h.Write(b)
		if s != nil {
			s.write(b)
		} else if capture.Len() < p.cfg.MaxCapture*4 {
			capture.Write(b)
		}
	})
	if fl, ok := w.(http.Flusher); ok && !cancelled {
		fl.Flush() // the client has its response before the record is made
	}
	t.end = time.Now()
	ev.respSize, ev.respDigest = int(n), hexDigest(h)
	outcome := statusOutcome(resp.StatusCode, c)
	switch {
	case s != nil:
		s.finish(c)
		outcome = statusOutcome(resp.StatusCode, c)
	case capture.Len() < p.cfg.MaxCapture*4:
		prs.response(c, resp.StatusCode, resp.Header, decoded(resp.Header, capture.Bytes()))
	default:
		c.output = json.RawMessage(fmt.Sprintf(`{"sha256":%q,"size":%d,"recorded_as":"digest: over the capture limit"}`, ev.respDigest[7:], n))
	}
	if cancelled {
		outcome = "client_cancelled"
	}
	e := ev.build(part(c.stream), outcome, refs(requestID))
	if failClosed {
		// The stream is out: its completion is committed, and spooled if the ledger failed meanwhile.
		if err := p.rec.Commit(context.WithoutCancel(r.Context()), e); err != nil {
			p.rec.Defer(e)
		}
		return
	}
	p.rec.Defer(e)
}

func hexDigest(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

func part(stream bool) string {
	if stream {
		return "completion"
	}
	return ""
}

func refs(id string) []string {
	if id == "" {
		return nil
	}
	return []string{id}
}

// copyBody copies the upstream body to the client, flushing each read when streaming. It keeps reading the
// upstream after the client went away only to finish the record; it reports bytes sent and a client cancel.
var copyBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (p *Proxy) copyBody(w http.ResponseWriter, body io.Reader, flush bool, tee func([]byte)) (int64, bool) {
	bp := copyBufs.Get().(*[32 << 10]byte)
	defer copyBufs.Put(bp)
	buf := bp[:]
	fl, _ := w.(http.Flusher)
	var n int64
	cancelled := false
	for {
		k, err := body.Read(buf)
		if k > 0 {
			tee(buf[:k])
			n += int64(k)
			if !cancelled {
				if _, werr := w.Write(buf[:k]); werr != nil {
					cancelled = true
				} else if flush && fl != nil {
					fl.Flush()
				}
			}
		}
		if err != nil {
			if err != io.EOF && !cancelled {
				// The upstream broke off: the client's copy is cut short as well.
				cancelled = errors.Is(err, context.Canceled)
			}
			return n, cancelled
		}
	}
}

// statusOutcome classifies a finished call.
func statusOutcome(status int, c *call) string {
	switch {
	case c.inStreamError:
		return "error_in_stream"
	case status >= 500:
		return "error_server"
	case status >= 400:
		return "error_client"
	}
	return "ok"
}

// finish records a held call and releases its response (fail-closed), or spools the record and releases it.
func (p *Proxy) finish(w http.ResponseWriter, ev *eventBuilder, outcome, requestID string, release func()) {
	e := ev.build(part(requestID != ""), outcome, refs(requestID))
	if p.rec.Policy() != FailClosed {
		p.rec.Defer(e)
		release()
		return
	}
	// The caller's context may be gone; the record must still be made.
	if err := p.rec.Commit(context.Background(), e); err != nil {
		var rj *Rejected
		if errors.As(err, &rj) {
			// The ledger refused the content; a substitute records the call. Nothing is released unrecorded.
			problem(w, http.StatusServiceUnavailable, "the inference could not be recorded: the ledger refused its content", rj.Field)
			return
		}
		p.rec.Refused()
		p.rec.Defer(ev.build(part(requestID != ""), "withheld", refs(requestID)))
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, "the ledger is unavailable: the response was withheld because it could not be recorded", "")
		return
	}
	release()
}

// refuse answers 503 without calling the upstream, and records the refusal once the ledger is back.
func (p *Proxy) refuse(w http.ResponseWriter, ev *eventBuilder) {
	p.rec.Refused()
	ev.c.errorCode = "ledger_unavailable"
	ev.id = ""
	p.rec.Defer(ev.build("", "refused", nil))
	w.Header().Set("Retry-After", "1")
	problem(w, http.StatusServiceUnavailable, "the ledger is unavailable: calls are not forwarded unrecorded (fail-closed)", "")
}

// passThrough forwards a call that is not an inference (health, metadata) without recording it.
func (p *Proxy) passThrough(w http.ResponseWriter, r *http.Request, body []byte) {
	resp, err := p.forward(r, body)
	if err != nil {
		problem(w, http.StatusBadGateway, "the model server is unreachable", "")
		return
	}
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	p.copyBody(w, resp.Body, mt == "text/event-stream", func([]byte) {})
}

// problem writes an RFC 9457 problem from the proxy itself (the upstream's errors pass through untouched).
func problem(w http.ResponseWriter, status int, detail, field string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	p := map[string]any{"type": "https://cairn.dev/problems/capture", "title": http.StatusText(status), "status": status, "detail": detail}
	if field != "" {
		p["errors"] = []map[string]string{{"field": field, "reason": "refused by the ledger"}}
	}
	json.NewEncoder(w).Encode(p)
}

// eventBuilder turns a call into inference events.
type eventBuilder struct {
	p                 *Proxy
	c                 *call
	t                 *timing
	id                string
	traceparent       string
	method, path      string
	reqType, respType string
	reqSize, respSize int
	respDigest        string
	status            int
}

var traceparentRE = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)
var codeRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// eventAttrs are an inference event's attributes as the proxy records them (docs/capture.md).
type eventAttrs struct {
	Protocol         string             `json:"protocol"`
	Status           int                `json:"status,omitempty"`
	Outcome          string             `json:"outcome,omitempty"`
	Part             string             `json:"part,omitempty"`
	LatencyMS        *float64           `json:"latency_ms,omitempty"`
	TTFBMS           *float64           `json:"ttfb_ms,omitempty"`
	RequestID        string             `json:"request_id,omitempty"`
	Traceparent      string             `json:"traceparent,omitempty"`
	ServedModel      string             `json:"served_model,omitempty"`
	ServedVersion    string             `json:"served_version,omitempty"`
	RequestedModel   string             `json:"requested_model,omitempty"`
	RequestedVersion string             `json:"requested_version,omitempty"`
	Usage            map[string]float64 `json:"usage,omitempty"`
	ErrorCode        string             `json:"error_code,omitempty"`
}

type eventRequest struct {
	Method      string `json:"method"`
	Path        string `json:"path"`
	ContentType string `json:"content_type"`
	Size        int    `json:"size"`
	SHA256      string `json:"sha256"`
}

type eventResponse struct {
	Status      int    `json:"status"`
	ContentType string `json:"content_type"`
	Size        int    `json:"size"`
	SHA256      string `json:"sha256,omitempty"`
}

type eventPayload struct {
	Input         json.RawMessage `json:"input,omitempty"`
	InputMeta     json.RawMessage `json:"input_meta,omitempty"`
	Parameters    json.RawMessage `json:"parameters,omitempty"`
	Output        json.RawMessage `json:"output,omitempty"`
	OutputMeta    json.RawMessage `json:"output_meta,omitempty"`
	Error         json.RawMessage `json:"error,omitempty"`
	FinishReasons []string        `json:"finish_reasons,omitempty"`
	Request       *eventRequest   `json:"request,omitempty"`
	Response      *eventResponse  `json:"response,omitempty"`
}

type eventModel struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type eventJSON struct {
	ID         string        `json:"id"`
	Type       string        `json:"type"`
	Time       string        `json:"time"`
	Model      eventModel    `json:"model"`
	Deployment string        `json:"deployment,omitempty"`
	Refs       []string      `json:"refs,omitempty"`
	Attrs      eventAttrs    `json:"attrs"`
	Payload    *eventPayload `json:"payload,omitempty"`
}

// build encodes the event of the call; part is "", "request" or "completion".
func (b *eventBuilder) build(part, outcome string, refs []string) []byte {
	c, cfg := b.c, b.p.cfg
	if b.id == "" {
		b.id = event.NewV7(time.Now()).String()
	}
	name, version := c.servedModel, c.servedVersion
	if name == "" {
		name, version = c.reqModel, c.reqVersion
	}
	if name == "" {
		name = cfg.Model
	}
	if version == "" && (name == cfg.Model || c.reqVersion == "") {
		version = cfg.ModelVersion
	}
	if version == "" && name == c.reqModel {
		version = c.reqVersion
	}
	if name == "" {
		name = "unknown"
	}
	if version == "" {
		version = "unknown"
	}
	a := eventAttrs{Protocol: c.proto, Status: b.status, Outcome: outcome, Part: part,
		ServedModel: c.servedModel, ServedVersion: c.servedVersion, RequestedModel: c.reqModel, RequestedVersion: c.reqVersion,
		Usage: c.usage}
	if part != "request" {
		if !b.t.end.IsZero() {
			ms := b.t.ms(b.t.end)
			a.LatencyMS = &ms
		}
		if !b.t.firstByte.IsZero() {
			ms := b.t.ms(b.t.firstByte)
			a.TTFBMS = &ms
		}
	}
	if c.correlation != "" && codeRE.MatchString(c.correlation) {
		a.RequestID = c.correlation
	}
	if traceparentRE.MatchString(b.traceparent) {
		a.Traceparent = b.traceparent
	}
	code := c.errorCode
	if code == "" && outcome != "ok" && outcome != "" && part != "request" {
		code = outcome
		if b.status >= 400 {
			code = fmt.Sprintf("http_%d", b.status)
		}
	}
	if outcome == "withheld" {
		code = "ledger_unavailable"
	}
	if code != "" && !codeRE.MatchString(code) {
		code = "upstream_error"
	}
	a.ErrorCode = code
	pl := &eventPayload{}
	if part != "completion" {
		pl.Input = capped(c.input, cfg.MaxCapture)
		pl.InputMeta = c.inputMeta
		if len(c.params) > 0 {
			pl.Parameters = capped(c.params, cfg.MaxCapture)
		}
		// The request's bytes, by digest; a completion refers to the request part that holds them.
		pl.Request = &eventRequest{Method: b.method, Path: b.path, ContentType: b.reqType, Size: b.reqSize, SHA256: c.requestDigest[7:]}
	}
	if part != "request" && b.status != 0 {
		if len(c.output) > 0 {
			pl.Output = capped(c.output, cfg.MaxCapture)
		}
		pl.OutputMeta = c.outputMeta
		if len(c.upstreamError) > 0 {
			pl.Error = capped(c.upstreamError, cfg.MaxCapture)
		}
		pl.FinishReasons = c.finishReasons
		pl.Response = &eventResponse{Status: b.status, ContentType: b.respType, Size: b.respSize}
		if b.respDigest != "" {
			pl.Response.SHA256 = b.respDigest[7:]
		}
	}
	if pl.Output == nil && a.ErrorCode == "" && part != "request" {
		// A success without a readable output still records that there was one.
		pl.Output = json.RawMessage("null")
	}
	ev := eventJSON{ID: b.id, Type: "inference", Time: b.t.start.UTC().Format(time.RFC3339Nano),
		Model: eventModel{Name: name, Version: version}, Deployment: cfg.Deployment, Refs: refs, Attrs: a, Payload: pl}
	out, err := json.Marshal(ev)
	if err != nil {
		// A value that does not encode (it cannot happen with parsed JSON): keep the call, drop the content.
		ev.Payload = &eventPayload{Output: json.RawMessage("null"), Request: pl.Request, Response: pl.Response}
		out, _ = json.Marshal(ev)
	}
	return out
}

// capped returns v, or its digest and size when it is larger than max bytes.
func capped(v json.RawMessage, max int) json.RawMessage {
	if len(v) == 0 {
		return json.RawMessage("null")
	}
	if len(v) > max {
		return opaqueValue(v, "digest: over the capture limit")
	}
	return v
}
