package proxy

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// Protocol names, as recorded in the inference event's protocol attribute.
const (
	ProtoOIP    = "oip-v2"
	ProtoMLflow = "mlflow"
	ProtoOpenAI = "openai"
	ProtoOpaque = "opaque"
)

// call is what the proxy learns about one inference call; it becomes one inference event (two for a stream).
type call struct {
	proto          string
	route          string // the matched route, e.g. "infer", "invocations", "chat.completions"
	reqModel       string
	reqVersion     string
	servedModel    string
	servedVersion  string
	correlation    string // client correlation id
	stream         bool   // the client asked for an event stream
	input          json.RawMessage
	inputMeta      json.RawMessage // tensor names, shapes and datatypes; the input format
	params         json.RawMessage // request parameters
	output         json.RawMessage
	outputMeta     json.RawMessage
	upstreamError  json.RawMessage // the upstream's error body, parsed (sealed: it may quote inputs)
	errorCode      string          // short non-personal code of the upstream error
	inStreamError  bool
	usage          map[string]float64
	finishReasons  []string
	requestDigest  string
	responseDigest string
}

// parser reads one protocol's requests and responses. Parsing never fails a call: what cannot be parsed is
// recorded by digest.
type parser interface {
	// request parses a request; false means the route is not an inference call (it is passed through unrecorded).
	request(c *call, r *http.Request, body []byte) bool
	// response parses a complete (non-streamed) response body.
	response(c *call, status int, h http.Header, body []byte)
	// streamer returns an accumulator for an event-stream response, or nil when the protocol has none.
	streamer() streamer
}

// streamer accumulates a streamed response chunk by chunk, never holding the stream back.
type streamer interface {
	write(p []byte)
	finish(c *call)
}

// parserFor returns the parser of a configured protocol; "auto" detects it per request from the route.
func parserFor(proto string, r *http.Request) parser {
	switch proto {
	case ProtoOIP:
		return oip{}
	case ProtoMLflow:
		return mlflow{}
	case ProtoOpenAI:
		return openai{}
	}
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/v2/models/") || strings.HasPrefix(p, "/v2/"):
		return oip{}
	case p == "/invocations":
		return mlflow{}
	case strings.HasSuffix(p, "/chat/completions"):
		return openai{}
	}
	return opaque{}
}

// digest is "sha256:<hex>" of b.
func digest(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// opaqueValue stands for content that was not parsed: its digest and size.
func opaqueValue(b []byte, reason string) json.RawMessage {
	v, _ := json.Marshal(map[string]any{"sha256": digest(b)[7:], "size": len(b), "recorded_as": reason})
	return v
}

// isJSON reports whether b is one JSON value (and so can be recorded as is).
func isJSON(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) > 0 && json.Valid(b)
}

// decoded returns the body with its content encoding removed, for parsing only (the client gets the original
// bytes). Unknown encodings are returned as is.
func decoded(h http.Header, body []byte) []byte {
	if strings.EqualFold(strings.TrimSpace(h.Get("Content-Encoding")), "gzip") {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return body
		}
		out, err := io.ReadAll(io.LimitReader(zr, 64<<20))
		if err != nil {
			return body
		}
		return out
	}
	return body
}

// opaque records any other POST by digest.
type opaque struct{}

func (opaque) request(c *call, r *http.Request, body []byte) bool {
	if r.Method != http.MethodPost {
		return false
	}
	c.proto, c.route = ProtoOpaque, r.URL.Path
	c.input = opaqueValue(body, "digest")
	return true
}

func (opaque) response(c *call, status int, h http.Header, body []byte) {
	if status < 300 {
		c.output = opaqueValue(body, "digest")
	}
}

func (opaque) streamer() streamer { return nil }

// errorBody records an upstream error body: as JSON when it is JSON, by digest otherwise.
func errorBody(c *call, body []byte) {
	if isJSON(body) {
		c.upstreamError = json.RawMessage(bytes.TrimSpace(body))
	} else if len(body) > 0 {
		c.upstreamError = opaqueValue(body, "digest")
	}
}
