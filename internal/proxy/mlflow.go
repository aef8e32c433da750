package proxy

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"mime"
	"net/http"
	"strconv"
)

// mlflow parses the MLflow pyfunc scoring server's /invocations: the four JSON input shapes (dataframe_split,
// dataframe_records, instances, inputs) and CSV. Inputs are recorded as records ([{column: value}]) wherever
// columns are known, so one field policy path (input[].column) covers every shape.
type mlflow struct{}

func (mlflow) request(c *call, r *http.Request, body []byte) bool {
	if r.Method != http.MethodPost || r.URL.Path != "/invocations" {
		return false
	}
	c.proto, c.route = ProtoMLflow, "invocations"
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "text/csv" {
		if recs, ok := csvRecords(body); ok {
			c.input, c.inputMeta = recs, json.RawMessage(`{"format":"csv"}`)
		} else {
			c.input = opaqueValue(body, "digest: unreadable CSV")
		}
		return true
	}
	in, format, params, ok := mlflowInput(body)
	if !ok {
		c.input = opaqueValue(body, "digest: not an MLflow request")
		return true
	}
	c.input, c.params = in, params
	c.inputMeta, _ = json.Marshal(map[string]string{"format": format})
	return true
}

// mlflowInput normalises one MLflow JSON request body.
func mlflowInput(body []byte) (in json.RawMessage, format string, params json.RawMessage, ok bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return nil, "", nil, false
	}
	params = m["params"]
	for _, f := range []string{"dataframe_split", "dataframe_records", "instances", "inputs"} {
		v, present := m[f]
		if !present {
			continue
		}
		switch f {
		case "dataframe_split":
			if recs, ok := splitRecords(v); ok {
				return recs, f, params, true
			}
		case "inputs":
			if recs, ok := columnRecords(v); ok {
				return recs, f, params, true
			}
		}
		return v, f, params, true
	}
	// Unified LLM bodies (messages, prompt, input) are accepted unwrapped.
	for _, f := range []string{"messages", "prompt", "input"} {
		if _, present := m[f]; present {
			return json.RawMessage(bytes.TrimSpace(body)), f, nil, true
		}
	}
	return nil, "", nil, false
}

// splitRecords turns {"columns": [...], "data": [[...]]} into records.
func splitRecords(v json.RawMessage) (json.RawMessage, bool) {
	var s struct {
		Columns []string            `json:"columns"`
		Data    [][]json.RawMessage `json:"data"`
	}
	if json.Unmarshal(v, &s) != nil || len(s.Columns) == 0 {
		return nil, false
	}
	recs := make([]map[string]json.RawMessage, len(s.Data))
	for i, row := range s.Data {
		if len(row) != len(s.Columns) {
			return nil, false
		}
		recs[i] = make(map[string]json.RawMessage, len(row))
		for j, c := range s.Columns {
			recs[i][c] = row[j]
		}
	}
	out, err := json.Marshal(recs)
	return out, err == nil
}

// columnRecords turns a columnar object {"col": [v, ...]} with equal-length columns into records.
func columnRecords(v json.RawMessage) (json.RawMessage, bool) {
	var cols map[string][]json.RawMessage
	if json.Unmarshal(v, &cols) != nil || len(cols) == 0 {
		return nil, false
	}
	n := -1
	for _, c := range cols {
		if n >= 0 && len(c) != n {
			return nil, false
		}
		n = len(c)
	}
	recs := make([]map[string]json.RawMessage, n)
	for i := range recs {
		recs[i] = make(map[string]json.RawMessage, len(cols))
		for name, c := range cols {
			recs[i][name] = c[i]
		}
	}
	out, err := json.Marshal(recs)
	return out, err == nil
}

// csvRecords reads a pandas-style CSV (header row) into records; numbers stay numbers.
func csvRecords(body []byte) (json.RawMessage, bool) {
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, false
	}
	head := rows[0]
	recs := make([]map[string]any, 0, len(rows)-1)
	for _, row := range rows[1:] {
		rec := make(map[string]any, len(head))
		for j, name := range head {
			if j >= len(row) {
				break
			}
			if f, err := strconv.ParseFloat(row[j], 64); err == nil {
				rec[name] = f
			} else {
				rec[name] = row[j]
			}
		}
		recs = append(recs, rec)
	}
	out, err := json.Marshal(recs)
	return out, err == nil
}

func (mlflow) response(c *call, status int, h http.Header, body []byte) {
	if status >= 300 {
		errorBody(c, body)
		var e struct {
			Code string `json:"error_code"`
		}
		if json.Unmarshal(body, &e) == nil && e.Code != "" && len(e.Code) <= 64 {
			c.errorCode = e.Code
		}
		return
	}
	var p struct {
		Predictions json.RawMessage `json:"predictions"`
	}
	switch {
	case json.Unmarshal(body, &p) == nil && len(p.Predictions) > 0:
		c.output = p.Predictions
	case isJSON(body):
		c.output = json.RawMessage(bytes.TrimSpace(body)) // unwrapped LLM responses
	default:
		c.output = opaqueValue(body, "digest")
	}
}

func (mlflow) streamer() streamer { return nil }
