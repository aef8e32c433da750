package proxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// oip parses the Open Inference Protocol v2 REST shapes (KServe V2, Triton, MLServer, Seldon Core 2), including
// Triton's binary tensor extension, whose raw tensors are recorded by digest.
type oip struct{}

type oipTensor struct {
	Name       string          `json:"name"`
	Shape      json.RawMessage `json:"shape,omitempty"`
	Datatype   string          `json:"datatype,omitempty"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

type oipBody struct {
	ID           string          `json:"id"`
	ModelName    string          `json:"model_name"`
	ModelVersion string          `json:"model_version"`
	Parameters   json.RawMessage `json:"parameters"`
	Inputs       []oipTensor     `json:"inputs"`
	Outputs      []oipTensor     `json:"outputs"`
	Error        json.RawMessage `json:"error"`
}

// oipRoute splits /v2/models/{m}[/versions/{v}]/{op} into its parts.
func oipRoute(path string) (model, version, op string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/v2/models/")
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 2 && parts[0] != "":
		return parts[0], "", parts[1], true
	case len(parts) == 4 && parts[0] != "" && parts[1] == "versions" && parts[2] != "":
		return parts[0], parts[2], parts[3], true
	}
	return "", "", "", false
}

func (oip) request(c *call, r *http.Request, body []byte) bool {
	m, v, op, ok := oipRoute(r.URL.Path)
	if !ok || r.Method != http.MethodPost || (op != "infer" && op != "generate" && op != "generate_stream") {
		return false
	}
	c.proto, c.route, c.reqModel, c.reqVersion = ProtoOIP, op, m, v
	if sm := r.Header.Get("Seldon-Model"); sm != "" {
		c.reqModel = sm
	}
	if op != "infer" {
		c.stream = op == "generate_stream"
		if isJSON(body) {
			c.input = json.RawMessage(bytes.TrimSpace(body))
		} else {
			c.input = opaqueValue(body, "digest")
		}
		return true
	}
	var b oipBody
	head, bin, ok := oipSplit(r.Header, body)
	if !ok || json.Unmarshal(head, &b) != nil {
		c.input = opaqueValue(body, "digest: not an OIP request")
		return true
	}
	c.correlation = b.ID
	c.params = b.Parameters
	c.input, c.inputMeta = oipTensors(b.Inputs, bin)
	return true
}

func (oip) response(c *call, status int, h http.Header, body []byte) {
	if c.route != "infer" {
		if status >= 300 {
			errorBody(c, body)
		} else if isJSON(body) {
			c.output = json.RawMessage(bytes.TrimSpace(body))
			var b oipBody
			if json.Unmarshal(body, &b) == nil {
				c.servedModel, c.servedVersion = b.ModelName, b.ModelVersion
			}
		} else {
			c.output = opaqueValue(body, "digest")
		}
		return
	}
	head, bin, ok := oipSplit(h, body)
	var b oipBody
	if !ok || json.Unmarshal(head, &b) != nil {
		if status >= 300 {
			errorBody(c, body)
		} else {
			c.output = opaqueValue(body, "digest: not an OIP response")
		}
		return
	}
	c.servedModel, c.servedVersion = b.ModelName, b.ModelVersion
	if status >= 300 {
		errorBody(c, head)
		return
	}
	c.output, c.outputMeta = oipTensors(b.Outputs, bin)
}

func (oip) streamer() streamer { return &sseText{} }

// oipSplit separates the JSON header of a binary-extension body from its raw tensors.
func oipSplit(h http.Header, body []byte) (head, bin []byte, ok bool) {
	hl := h.Get("Inference-Header-Content-Length")
	if hl == "" {
		return body, nil, true
	}
	n, err := strconv.Atoi(hl)
	if err != nil || n < 0 || n > len(body) {
		return nil, nil, false
	}
	return body[:n], body[n:], true
}

// oipTensors returns {name: data} and the tensors' metadata. Tensors sent as raw binary (binary_data_size) are
// recorded by digest and size, in order.
func oipTensors(ts []oipTensor, bin []byte) (json.RawMessage, json.RawMessage) {
	data := make(map[string]json.RawMessage, len(ts))
	type meta struct {
		Name       string          `json:"name"`
		Shape      json.RawMessage `json:"shape,omitempty"`
		Datatype   string          `json:"datatype,omitempty"`
		Parameters json.RawMessage `json:"parameters,omitempty"`
		Binary     bool            `json:"binary,omitempty"`
	}
	metas := make([]meta, 0, len(ts))
	for _, t := range ts {
		m := meta{Name: t.Name, Shape: t.Shape, Datatype: t.Datatype, Parameters: t.Parameters}
		var p struct {
			Size *int64 `json:"binary_data_size"`
		}
		if len(t.Parameters) > 0 {
			json.Unmarshal(t.Parameters, &p)
		}
		switch {
		case p.Size != nil:
			m.Binary = true
			n := *p.Size
			if n < 0 || n > int64(len(bin)) {
				data[t.Name] = opaqueValue(nil, "binary tensor beyond the body")
				bin = nil
			} else {
				data[t.Name] = opaqueValue(bin[:n], "binary tensor: digest")
				bin = bin[n:]
			}
		case len(t.Data) > 0:
			data[t.Name] = t.Data
		default:
			data[t.Name] = json.RawMessage("null")
		}
		metas = append(metas, m)
	}
	d, _ := json.Marshal(data)
	mt, _ := json.Marshal(metas)
	return d, mt
}
