package gate

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
)

// Text renders a result for a terminal or a CI log: a verdict line, then one line per rule.
func (r *Result) Text() string {
	var b strings.Builder
	verdict := "PASS"
	if !r.Passed {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "cairn gate: %s %s — %s (%d of %d rules failed; policy %s; %d events checked)\n",
		r.System, r.ModelVersion, verdict, r.Failed, len(r.Rules), r.PolicyDigest, r.TreeSize)
	width := 0
	for _, rule := range r.Rules {
		width = max(width, len(rule.Name))
	}
	for _, rule := range r.Rules {
		mark := "PASS"
		if !rule.Passed {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %s  %-*s  %s", mark, width, rule.Name, rule.Detail)
		for _, c := range rule.Cites {
			fmt.Fprintf(&b, " [leaf %d %s]", c.Leaf, c.Event)
		}
		b.WriteByte('\n')
	}
	if r.Event != "" {
		fmt.Fprintf(&b, "recorded as gate event %s (leaf %d)\n", r.Event, r.Index)
	}
	return b.String()
}

type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Timestamp  string          `xml:"timestamp,attr"`
	Properties []junitProperty `xml:"properties>property"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	ClassName string        `xml:"classname,attr"`
	Failure   *junitFailure `xml:"failure"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// JUnit renders a result as JUnit XML: one test suite for the gate, one test case per rule.
func (r *Result) JUnit() []byte {
	s := junitSuite{Name: "cairn gate " + r.System + " " + r.ModelVersion, Tests: len(r.Rules), Failures: r.Failed, Timestamp: r.Checked,
		Properties: []junitProperty{{"system", r.System}, {"model_version", r.ModelVersion}, {"policy_digest", r.PolicyDigest}, {"tree_size", strconv.FormatUint(r.TreeSize, 10)}}}
	if r.Event != "" {
		s.Properties = append(s.Properties, junitProperty{"gate_event", r.Event})
	}
	for _, rule := range r.Rules {
		class, name, ok := strings.Cut(rule.Name, "/")
		if !ok {
			name = class
		}
		var cites []string
		for _, c := range rule.Cites {
			cites = append(cites, fmt.Sprintf("leaf %d event %s", c.Leaf, c.Event))
		}
		tc := junitCase{Name: name, ClassName: "cairn.gate." + class, SystemOut: strings.Join(append([]string{rule.Detail}, cites...), "\n")}
		if !rule.Passed {
			tc.Failure = &junitFailure{Message: rule.Detail, Type: "gate", Text: tc.SystemOut}
		}
		s.Cases = append(s.Cases, tc)
	}
	out, _ := xml.MarshalIndent(junitSuites{Name: "cairn gate", Tests: s.Tests, Failures: s.Failures, Suites: []junitSuite{s}}, "", "  ")
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.Write(out)
	b.WriteByte('\n')
	return b.Bytes()
}
