package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// The protocol parsers read whatever a client or a model server sends: they must never panic, and what they
// record must always be valid JSON (or nothing).

func checkCall(t *testing.T, c *call) {
	for name, v := range map[string]json.RawMessage{"input": c.input, "input_meta": c.inputMeta, "params": c.params,
		"output": c.output, "output_meta": c.outputMeta, "error": c.upstreamError} {
		if len(v) > 0 && !json.Valid(v) {
			t.Fatalf("%s is not valid JSON: %q", name, v)
		}
	}
}

func fuzzParser(f *testing.F, p parser, path string, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s), []byte(s), 0)
	}
	f.Fuzz(func(t *testing.T, req, resp []byte, headerLen int) {
		r := httptest.NewRequest("POST", path, strings.NewReader(string(req)))
		h := http.Header{}
		if headerLen > 0 {
			r.Header.Set("Inference-Header-Content-Length", strconv.Itoa(headerLen))
			h.Set("Inference-Header-Content-Length", strconv.Itoa(headerLen))
		}
		c := &call{}
		if !p.request(c, r, req) {
			t.Fatal("an inference route was not recorded")
		}
		p.response(c, 200, h, resp)
		checkCall(t, c)
		c2 := &call{}
		p.request(c2, r, req)
		p.response(c2, 500, h, resp)
		checkCall(t, c2)
		if s := p.streamer(); s != nil {
			c3 := &call{}
			half := len(resp) / 2
			s.write(resp[:half])
			s.write(resp[half:])
			s.finish(c3)
			checkCall(t, c3)
		}
	})
}

func FuzzOIP(f *testing.F) {
	fuzzParser(f, oip{}, "/v2/models/iris/versions/1/infer",
		`{"id":"1","inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`,
		`{"inputs":[{"name":"img","shape":[4],"datatype":"UINT8","parameters":{"binary_data_size":4}}]}abcd`,
		oipResponse, `{"error":"bad"}`, `data: {"text_output":"a"}`+"\n\n")
}

func FuzzMLflow(f *testing.F) {
	fuzzParser(f, mlflow{}, "/invocations",
		`{"dataframe_split":{"columns":["a","b"],"data":[[1,2]]}}`, `{"dataframe_records":[{"a":1}]}`,
		`{"instances":[[1,2]]}`, `{"inputs":{"a":[1,2],"b":[3,4]},"params":{"k":1}}`, `{"predictions":[1]}`,
		`{"error_code":"BAD_REQUEST","message":"m"}`, `{"messages":[{"role":"user","content":"hi"}]}`)
}

func FuzzOpenAI(f *testing.F) {
	fuzzParser(f, openai{}, "/v1/chat/completions",
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"temperature":0.2}`,
		`{"id":"c","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens_details":{"reasoning_tokens":2}}}`,
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\",\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\"}}]}}]}\r\n\r\ndata: [DONE]\r\n\r\n",
		`{"error":{"message":"m","type":"invalid_request_error","code":"bad"}}`)
}

func FuzzSSE(f *testing.F) {
	f.Add([]byte("data: a\n\ndata: b\r\ndata: c\r\n\r\n: keep-alive\n\n"), 3)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		var whole, parts []string
		var p1, p2 sseParser
		p1.feed(b, func(d []byte) { whole = append(whole, string(d)) })
		if split < 0 {
			split = -split
		}
		if len(b) > 0 {
			split %= len(b) + 1
		} else {
			split = 0
		}
		p2.feed(b[:split], func(d []byte) { parts = append(parts, string(d)) })
		p2.feed(b[split:], func(d []byte) { parts = append(parts, string(d)) })
		if strings.Join(whole, "\x00") != strings.Join(parts, "\x00") || len(whole) != len(parts) {
			t.Fatalf("chunking changed the events: %q vs %q", whole, parts)
		}
	})
}
