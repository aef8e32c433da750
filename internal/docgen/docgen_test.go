package docgen_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/docgen"
	. "github.com/cairn-ai/cairn/internal/docgen/docgentest"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/signature"
)

var update = flag.Bool("update", false, "rewrite the golden files and docs/examples")

var textFormats = []string{docgen.FormatMarkdown, docgen.FormatHTML, docgen.FormatJSON}

// TestGolden: the fixed scenario gives byte-identical documents of every kind in every text format, run after
// run (the golden files), and generating twice from one log gives the same bytes.
func TestGolden(t *testing.T) {
	w := Scenario(t, nil)
	docs := All(t, w)
	for kind, d := range docs {
		for _, f := range textFormats {
			b, err := docgen.Render(d, f)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := docgen.Render(Doc(t, w, kind, Requests(w)[kind].ModelVersion, Requests(w)[kind].From, Requests(w)[kind].To, Requests(w)[kind].Event), f)
			if !bytes.Equal(b, again) {
				t.Errorf("%s.%s: two generations from the same log state differ", kind, f)
			}
			golden := filepath.Join("testdata", "golden", kind+"."+f)
			if *update {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				if err := os.WriteFile(golden, b, 0o644); err != nil {
					t.Fatal(err)
				}
				if f == docgen.FormatMarkdown || (f == docgen.FormatHTML && kind == docgen.KindDeclaration) {
					os.WriteFile(filepath.Join("..", "..", "docs", "examples", kind+"."+f), b, 0o644)
				}
				continue
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(b, want) {
				t.Errorf("%s differs from the golden file (%d vs %d bytes): first difference at byte %d", golden, len(b), len(want), firstDiff(b, want))
			}
			// The committed examples are these very documents.
			if f == docgen.FormatMarkdown || (f == docgen.FormatHTML && kind == docgen.KindDeclaration) {
				ex, err := os.ReadFile(filepath.Join("..", "..", "docs", "examples", kind+"."+f))
				if err != nil || !bytes.Equal(ex, b) {
					t.Errorf("docs/examples/%s.%s is not the generated document (run go test ./internal/docgen -run TestGolden -update): %v", kind, f, err)
				}
			}
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestSourceChangeChangesDocument: changing one source event changes the documents that draw on it, and the
// citation of that event (its digest), while citations of untouched events stay.
func TestSourceChangeChangesDocument(t *testing.T) {
	base := All(t, Scenario(t, nil))
	for _, c := range []struct {
		name, from, to string
		event          string // the changed event's name in the scenario
		kinds          []string
	}{
		{"evaluation metric", `"metrics":{"auc":0.81,`, `"metrics":{"auc":0.82,`, "eval1", []string{docgen.KindModelCard, docgen.KindEvaluation, docgen.KindAnnexIV, docgen.KindInstructions}},
		{"dataset size", `"rows":240000`, `"rows":240001`, "data2", []string{docgen.KindDatasheet}},
		{"incident status", `"status":"investigating"`, `"status":"closed"`, "incident", []string{docgen.KindMonitoring}},
		{"deployment configuration", `"config_digest":"sha256:00000000000000000000000000000000000000000000000000000000000000c9"`, `"config_digest":"sha256:00000000000000000000000000000000000000000000000000000000000000ca"`, "deploy1", []string{docgen.KindReconstruction}},
	} {
		changed := Scenario(t, func(raw string) string { return strings.Replace(raw, c.from, c.to, 1) })
		ch := All(t, changed)
		id := changed.ID(c.event)
		for _, kind := range c.kinds {
			a, _ := docgen.Render(base[kind], docgen.FormatJSON)
			b, _ := docgen.Render(ch[kind], docgen.FormatJSON)
			if bytes.Equal(a, b) {
				t.Errorf("%s: %s unchanged after a source event changed", c.name, kind)
				continue
			}
			ca, cb := citesOf(base[kind], id), citesOf(ch[kind], id)
			if len(ca) == 0 || len(ca) != len(cb) || ca[0] == cb[0] {
				t.Errorf("%s: %s: citations of the changed event: %v → %v", c.name, kind, ca, cb)
			}
			if da, db := citesOf(base[kind], changed.ID("model1")), citesOf(ch[kind], changed.ID("model1")); len(da) > 0 && da[0] != db[0] {
				t.Errorf("%s: %s: citation of an untouched event changed: %v → %v", c.name, kind, da, db)
			}
			if base[kind].Checkpoint.Note == ch[kind].Checkpoint.Note {
				t.Errorf("%s: %s: same checkpoint over different logs", c.name, kind)
			}
		}
	}
}

// citesOf lists the citations of one event in a document.
func citesOf(d *docgen.Document, id string) []docgen.Cite {
	var out []docgen.Cite
	add := func(cs []docgen.Cite) {
		for _, c := range cs {
			if c.Event == id {
				out = append(out, c)
			}
		}
	}
	var walk func([]docgen.Section)
	walk = func(ss []docgen.Section) {
		for _, s := range ss {
			for _, it := range s.Items {
				add(it.Cites)
			}
			for _, tb := range s.Tables {
				for _, r := range tb.Rows {
					add(r.Cites)
				}
			}
			walk(s.Sections)
		}
	}
	walk(d.Sections)
	return out
}

// annexIV is every numbered point of Annex IV (reference/ai-act-requirements.md §5.1), written out here rather
// than taken from the package, so that a point the package forgets fails the test.
var annexIV = []string{"1", "1(a)", "1(b)", "1(c)", "1(d)", "1(e)", "1(f)", "1(g)", "1(h)",
	"2", "2(a)", "2(b)", "2(c)", "2(d)", "2(e)", "2(f)", "2(g)", "2(h)", "3", "4", "5", "6", "7", "8", "9"}

var annexV = []string{"1", "2", "3", "4", "5", "6", "7", "8"}

var art13 = []string{"(a)", "(b)", "(b)(i)", "(b)(ii)", "(b)(iii)", "(b)(iv)", "(b)(v)", "(b)(vi)", "(b)(vii)", "(c)", "(d)", "(e)", "(f)"}

// TestEverySectionFilledOrMissing: every Annex IV point, Annex V item and Art. 13(3) point appears, in order,
// and says something: a statement citing the log or definition, a table, or a gap naming what would supply it.
func TestEverySectionFilledOrMissing(t *testing.T) {
	w := Scenario(t, nil)
	// A bare definition too: almost everything is missing then, and each gap must say what supplies it.
	bare := NewWorld(t, nil)
	bare.At(Start.Add(time.Hour))
	if _, _, err := bare.L.Register(context.Background(), []byte(`{"id":"credit","name":"Credit scoring","provider":"Acme","intended_purpose":"scoring"}`), "admin"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind string
		want []string
	}{{docgen.KindAnnexIV, annexIV}, {docgen.KindDeclaration, annexV}, {docgen.KindInstructions, art13}} {
		for name, wd := range map[string]*World{"scenario": w, "bare": bare} {
			d, err := docgen.Generate(context.Background(), wd.Log, "", docgen.Request{Kind: c.kind, At: At})
			if err != nil {
				t.Fatal(err)
			}
			var numbers []string
			var walk func([]docgen.Section)
			walk = func(ss []docgen.Section) {
				for _, s := range ss {
					numbers = append(numbers, s.Number)
					if len(s.Items)+len(s.Tables)+len(s.Sections) == 0 {
						t.Errorf("%s/%s %s is empty", name, c.kind, s.Number)
					}
					for _, it := range s.Items {
						if it.Missing != nil && (it.Missing.What == "" || it.Missing.Supplied == "") {
							t.Errorf("%s/%s %s: a gap that does not say what is missing or what supplies it: %+v", name, c.kind, s.Number, it)
						}
					}
					walk(s.Sections)
				}
			}
			walk(d.Sections)
			if !slices.Equal(numbers, c.want) {
				t.Errorf("%s/%s sections %v, want %v", name, c.kind, numbers, c.want)
			}
			md, _ := docgen.Render(d, docgen.FormatMarkdown)
			if name == "bare" && bytes.Count(md, []byte("MISSING")) < len(c.want)/2 {
				t.Errorf("bare %s reports only %d gaps", c.kind, bytes.Count(md, []byte("MISSING")))
			}
			js, _ := docgen.Render(d, docgen.FormatJSON)
			if name == "bare" && c.kind == docgen.KindDeclaration && !bytes.Contains(js, []byte(`"supplied_by": "provider_info.address`)) {
				t.Errorf("a missing address is not reported with what supplies it:\n%s", md)
			}
		}
	}
}

// htmlHeadings parses a document's HTML strictly (it is well-formed XML as well as HTML) and returns the text of
// its h1–h4 elements.
func htmlHeadings(t *testing.T, b []byte) []string {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = true
	dec.Entity = map[string]string{}
	var out []string
	var cur *strings.Builder
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("html does not parse: %v", err)
		}
		switch x := tok.(type) {
		case xml.StartElement:
			if len(x.Name.Local) == 2 && x.Name.Local[0] == 'h' && x.Name.Local[1] >= '1' && x.Name.Local[1] <= '4' {
				cur = &strings.Builder{}
			}
		case xml.CharData:
			if cur != nil {
				cur.Write(x)
			}
		case xml.EndElement:
			if cur != nil && len(x.Name.Local) == 2 && x.Name.Local[0] == 'h' {
				out = append(out, cur.String())
				cur = nil
			}
		}
	}
	return out
}

// TestHTMLParsesWithEveryHeading: every kind's HTML parses and holds every section heading, and the checkpoint.
func TestHTMLParsesWithEveryHeading(t *testing.T) {
	w := Scenario(t, nil)
	for kind, d := range All(t, w) {
		b, _ := docgen.Render(d, docgen.FormatHTML)
		hs := htmlHeadings(t, b)
		for _, h := range append(d.Headings(), "Checkpoint") {
			if !slices.Contains(hs, h) {
				t.Errorf("%s: heading %q missing from the HTML (has %q)", kind, h, hs)
			}
		}
	}
}

// TestCheckpointAndCitationsVerify: each format ends with a checkpoint signed by the log's key for exactly the
// state generated against, and every citation is provably a leaf of that tree with the cited digest.
func TestCheckpointAndCitationsVerify(t *testing.T) {
	w := Scenario(t, nil)
	vkey := w.L.VerifierKey("credit")
	d := Doc(t, w, docgen.KindAnnexIV, "credit@1", time.Time{}, time.Time{}, "")
	for _, f := range textFormats {
		b, _ := docgen.Render(d, f)
		note, err := docgen.ExtractCheckpoint(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cp, err := ledger.OpenCheckpoint([]byte(note), vkey)
		if err != nil || cp.Size != d.Checkpoint.TreeSize {
			t.Fatalf("%s: checkpoint %v %+v", f, err, cp)
		}
		if !bytes.HasSuffix(bytes.TrimRight(b, "\n"), []byte(strings.TrimRight(lastLine(note), "\n")+"\n```")) && f == docgen.FormatMarkdown {
			t.Errorf("the Markdown does not end with its checkpoint")
		}
	}
	cp, _ := ledger.OpenCheckpoint([]byte(d.Checkpoint.Note), vkey)
	n := 0
	var walk func([]docgen.Section)
	check := func(cs []docgen.Cite) {
		for _, c := range cs {
			n++
			e, err := w.Log.Entry(context.Background(), c.Leaf)
			if err != nil || e.ID.String() != c.Event || "sha256:"+hexs(e.Digest[:]) != c.Digest {
				t.Fatalf("citation %+v does not name its leaf: %v", c, err)
			}
			proof, err := tlog.ProveRecord(int64(cp.Size), int64(c.Leaf), w.Log.Store())
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.CheckRecord(proof, int64(cp.Size), cp.Root, int64(c.Leaf), tlog.RecordHash(e.AppendLeaf(nil))); err != nil {
				t.Fatalf("citation %+v: %v", c, err)
			}
		}
	}
	walk = func(ss []docgen.Section) {
		for _, s := range ss {
			for _, it := range s.Items {
				check(it.Cites)
			}
			for _, tb := range s.Tables {
				for _, r := range tb.Rows {
					check(r.Cites)
				}
			}
			walk(s.Sections)
		}
	}
	walk(d.Sections)
	if n < 20 {
		t.Errorf("only %d citations checked", n)
	}
	// Before the system was registered there is nothing to document.
	if _, err := docgen.Generate(context.Background(), w.Log, vkey, docgen.Request{Kind: docgen.KindModelCard, At: Start.Add(-time.Hour)}); !errors.Is(err, docgen.ErrEmpty) {
		t.Errorf("a document before registration: %v", err)
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestPDF prints every kind through headless Chromium and finds every heading in the PDF's text (pdftotext). In
// CI a missing Chromium or pdftotext fails the test.
func TestPDF(t *testing.T) {
	for _, tool := range []string{"pdftotext"} {
		if _, err := exec.LookPath(tool); err != nil || docgen.ChromiumPath() == "" {
			if os.Getenv("CI") != "" {
				t.Fatalf("CI needs chromium and pdftotext (.ci/run installs them): %v", err)
			}
			t.Skip("chromium or pdftotext not installed")
		}
	}
	w := Scenario(t, nil)
	dir := t.TempDir()
	for kind, d := range All(t, w) {
		h, _ := docgen.Render(d, docgen.FormatHTML)
		pdf, err := docgen.PDF(context.Background(), h)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		p := filepath.Join(dir, kind+".pdf")
		os.WriteFile(p, pdf, 0o600)
		out, err := exec.Command("pdftotext", "-layout", p, "-").Output()
		if err != nil {
			t.Fatalf("pdftotext %s: %v", kind, err)
		}
		text := strings.Join(strings.Fields(string(out)), " ")
		for _, h := range append(d.Headings(), "Checkpoint") {
			if !strings.Contains(text, strings.Join(strings.Fields(h), " ")) {
				t.Errorf("%s: heading %q not in the PDF's text", kind, h)
			}
		}
	}
}

// BenchmarkGenerate measures generating a document over a log of the scenario plus 100,000 inferences: the cost
// is one pass over the log prefix.
func BenchmarkGenerate(b *testing.B) {
	w := Scenario(b, nil)
	w.At(At.Add(time.Hour))
	raw := `{"type":"inference","model":{"name":"credit","version":"2"},"deployment":"prod","attrs":{"confidence":0.7,"latency_ms":20},"payload":{"output":{"score":600}}}`
	batch := make([]string, 1000)
	for i := range batch {
		batch[i] = raw
	}
	for range 100 {
		w.Add("", "svc-scoring", batch...)
	}
	at := At.Add(2 * time.Hour)
	for _, kind := range []string{docgen.KindModelCard, docgen.KindAnnexIV, docgen.KindMonitoring} {
		b.Run(kind, func(b *testing.B) {
			for b.Loop() {
				d, err := docgen.Generate(context.Background(), w.Log, "", docgen.Request{Kind: kind, At: at, From: Start, To: at})
				if err != nil {
					b.Fatal(err)
				}
				docgen.Render(d, docgen.FormatHTML)
			}
			b.ReportMetric(float64(w.Log.Store().Size()), "events")
		})
	}
}

// TestSignedTestReport: Annex IV 2(g) wants test reports dated and signed; an evaluation report is signed by a
// recorded signature, or by an approval that carries the approver's signature over the report's digest.
func TestSignedTestReport(t *testing.T) {
	w := Scenario(t, nil)
	w.At(At.Add(time.Hour))
	_, dg, _ := w.Generate(docgen.KindEvaluation, "credit@1", "carol")
	attrs := fmt.Sprintf(`"signed_digest":%q,"signature":%q,"signature_format":"ssh","signer_key":%q`, dg,
		signature.SignSSH(SignatoryKey, dg), signature.AuthorizedKey(SignatoryKey.Public().(ed25519.PublicKey)))
	w.Add("", "dave", fmt.Sprintf(`{"type":"approval","model":{"name":"credit","version":"1"},"refs":[%q],"attrs":{"decision":"approve",%s}}`, w.ID("eval1"), attrs))
	w.At(At.Add(2 * time.Hour))
	d, err := docgen.Generate(context.Background(), w.Log, "", docgen.Request{Kind: docgen.KindAnnexIV, ModelVersion: "credit@1", At: w.Now()})
	if err != nil {
		t.Fatal(err)
	}
	md, _ := docgen.Render(d, docgen.FormatMarkdown)
	want := "in the approval by dave (approve), key " + signature.Fingerprint(SignatoryKey.Public().(ed25519.PublicKey))
	if !bytes.Contains(md, []byte(want)) || bytes.Contains(md, []byte("the test report is not signed")) {
		t.Errorf("2(g) does not show the approval's signature of the report:\n%s", md)
	}
}
