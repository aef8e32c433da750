package proxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
)

// openai parses OpenAI Chat Completions, streamed (SSE) or not. The output recorded is one message per choice;
// for streams it is rebuilt from the deltas, and usage is taken from the final chunk when the client asked for it.
type openai struct{}

func (openai) request(c *call, r *http.Request, body []byte) bool {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		return false
	}
	c.proto, c.route = ProtoOpenAI, "chat.completions"
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		c.input = opaqueValue(body, "digest: not a chat completions request")
		return true
	}
	json.Unmarshal(m["model"], &c.reqModel)
	json.Unmarshal(m["stream"], &c.stream)
	c.input = m["messages"]
	if len(c.input) == 0 {
		c.input = json.RawMessage("null")
	}
	delete(m, "messages")
	delete(m, "model")
	if len(m) > 0 {
		c.params, _ = json.Marshal(m)
	}
	return true
}

type chatMessage struct {
	Index        int             `json:"index"`
	Role         string          `json:"role,omitempty"`
	Content      string          `json:"content"`
	Refusal      string          `json:"refusal,omitempty"`
	ToolCalls    []toolCall      `json:"tool_calls,omitempty"`
	FinishReason string          `json:"finish_reason,omitempty"`
	raw          json.RawMessage // non-streamed message as sent
}

type toolCall struct {
	Index    int    `json:"index"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type chatBody struct {
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint"`
	Choices           []struct {
		Index        int             `json:"index"`
		Message      json.RawMessage `json:"message"`
		Delta        json.RawMessage `json:"delta"`
		FinishReason *string         `json:"finish_reason"`
	} `json:"choices"`
	Usage map[string]json.RawMessage `json:"usage"`
	Error json.RawMessage            `json:"error"`
}

func (openai) response(c *call, status int, h http.Header, body []byte) {
	var b chatBody
	if json.Unmarshal(body, &b) != nil {
		if status >= 300 {
			errorBody(c, body)
		} else {
			c.output = opaqueValue(body, "digest: not a chat completion")
		}
		return
	}
	c.servedModel, c.servedVersion = b.Model, b.SystemFingerprint
	if status >= 300 || len(b.Error) > 0 && string(b.Error) != "null" {
		errorBody(c, body)
		openaiErrorCode(c, b.Error)
		return
	}
	type choice struct {
		Index        int             `json:"index"`
		Message      json.RawMessage `json:"message"`
		FinishReason string          `json:"finish_reason,omitempty"`
	}
	out := make([]choice, 0, len(b.Choices))
	for _, ch := range b.Choices {
		fr := ""
		if ch.FinishReason != nil {
			fr = *ch.FinishReason
			c.finishReasons = append(c.finishReasons, fr)
		}
		out = append(out, choice{Index: ch.Index, Message: ch.Message, FinishReason: fr})
	}
	c.output, _ = json.Marshal(out)
	c.usage = usageNumbers(b.Usage)
}

// openaiErrorCode takes the error's type or code, which are short machine words, as the error code.
func openaiErrorCode(c *call, e json.RawMessage) {
	var v struct {
		Type string `json:"type"`
		Code any    `json:"code"`
	}
	if json.Unmarshal(e, &v) == nil {
		if s, ok := v.Code.(string); ok && s != "" {
			c.errorCode = s
		} else if v.Type != "" {
			c.errorCode = v.Type
		}
	}
}

// usageNumbers keeps the numeric usage counters, flattening *_details objects one level.
func usageNumbers(u map[string]json.RawMessage) map[string]float64 {
	if len(u) == 0 {
		return nil
	}
	out := map[string]float64{}
	for k, v := range u {
		var f float64
		if json.Unmarshal(v, &f) == nil {
			out[k] = f
			continue
		}
		var sub map[string]json.RawMessage
		if json.Unmarshal(v, &sub) == nil {
			for k2, v2 := range sub {
				if json.Unmarshal(v2, &f) == nil {
					out[k+"."+k2] = f
				}
			}
		}
	}
	return out
}

func (openai) streamer() streamer { return &chatStream{choices: map[int]*chatMessage{}} }

// chatStream rebuilds a chat completion from its chunks.
type chatStream struct {
	sse     sseParser
	choices map[int]*chatMessage
	model   string
	fp      string
	usage   map[string]float64
	errBody json.RawMessage
	done    bool
	events  int
}

func (s *chatStream) write(p []byte) {
	s.sse.feed(p, func(data []byte) {
		s.events++
		if bytes.Equal(bytes.TrimSpace(data), []byte("[DONE]")) {
			s.done = true
			return
		}
		var b chatBody
		if json.Unmarshal(data, &b) != nil {
			return
		}
		if len(b.Error) > 0 && string(b.Error) != "null" {
			s.errBody = append(json.RawMessage(nil), data...)
		}
		if b.Model != "" {
			s.model = b.Model
		}
		if b.SystemFingerprint != "" {
			s.fp = b.SystemFingerprint
		}
		if u := usageNumbers(b.Usage); u != nil {
			s.usage = u
		}
		for _, ch := range b.Choices {
			m := s.choices[ch.Index]
			if m == nil {
				m = &chatMessage{Index: ch.Index}
				s.choices[ch.Index] = m
			}
			var d struct {
				Role      string     `json:"role"`
				Content   *string    `json:"content"`
				Refusal   *string    `json:"refusal"`
				ToolCalls []toolCall `json:"tool_calls"`
			}
			if json.Unmarshal(ch.Delta, &d) == nil {
				if d.Role != "" {
					m.Role = d.Role
				}
				if d.Content != nil {
					m.Content += *d.Content
				}
				if d.Refusal != nil {
					m.Refusal += *d.Refusal
				}
				for _, tc := range d.ToolCalls {
					m.mergeTool(tc)
				}
			}
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				m.FinishReason = *ch.FinishReason
			}
		}
	})
}

func (m *chatMessage) mergeTool(tc toolCall) {
	for i := range m.ToolCalls {
		if m.ToolCalls[i].Index == tc.Index {
			t := &m.ToolCalls[i]
			if tc.ID != "" {
				t.ID = tc.ID
			}
			if tc.Type != "" {
				t.Type = tc.Type
			}
			t.Function.Name += tc.Function.Name
			t.Function.Arguments += tc.Function.Arguments
			return
		}
	}
	m.ToolCalls = append(m.ToolCalls, tc)
}

func (s *chatStream) finish(c *call) {
	c.servedModel, c.servedVersion = s.model, s.fp
	c.usage = s.usage
	idx := make([]int, 0, len(s.choices))
	for i := range s.choices {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	out := make([]*chatMessage, 0, len(idx))
	for _, i := range idx {
		out = append(out, s.choices[i])
		if fr := s.choices[i].FinishReason; fr != "" {
			c.finishReasons = append(c.finishReasons, fr)
		}
	}
	c.output, _ = json.Marshal(out)
	if s.errBody != nil {
		c.inStreamError = true
		c.upstreamError = s.errBody
		var b chatBody
		json.Unmarshal(s.errBody, &b)
		openaiErrorCode(c, b.Error)
	}
}

// sseText keeps the data of every event of a stream of another protocol (Triton generate_stream) in order.
type sseText struct {
	sse    sseParser
	events []json.RawMessage
	err    bool
}

func (s *sseText) write(p []byte) {
	s.sse.feed(p, func(data []byte) {
		if isJSON(data) {
			s.events = append(s.events, append(json.RawMessage(nil), bytes.TrimSpace(data)...))
			var e struct {
				Error json.RawMessage `json:"error"`
			}
			if json.Unmarshal(data, &e) == nil && len(e.Error) > 0 {
				s.err = true
			}
		} else {
			s.events = append(s.events, opaqueValue(data, "digest"))
		}
	})
}

func (s *sseText) finish(c *call) {
	c.output, _ = json.Marshal(s.events)
	c.inStreamError = s.err
}

// sseParser splits a text/event-stream into events per the WHATWG rules: "data:" lines are joined with "\n",
// a blank line dispatches, comments and other fields are skipped, and CRLF, CR or LF end a line.
type sseParser struct {
	line    []byte
	data    []byte
	hasData bool
	lastCR  bool
}

func (p *sseParser) feed(b []byte, dispatch func(data []byte)) {
	for _, c := range b {
		if p.lastCR {
			p.lastCR = false
			if c == '\n' {
				continue
			}
		}
		if c == '\r' || c == '\n' {
			p.lastCR = c == '\r'
			p.endLine(dispatch)
			continue
		}
		if len(p.line) < 16<<20 {
			p.line = append(p.line, c)
		}
	}
}

func (p *sseParser) endLine(dispatch func(data []byte)) {
	line := p.line
	p.line = p.line[:0]
	if len(line) == 0 {
		if p.hasData {
			dispatch(p.data)
		}
		p.data, p.hasData = p.data[:0], false
		return
	}
	if line[0] == ':' {
		return
	}
	field, value, _ := bytes.Cut(line, []byte(":"))
	value = bytes.TrimPrefix(value, []byte(" "))
	if string(field) == "data" {
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasData = true
	}
}
