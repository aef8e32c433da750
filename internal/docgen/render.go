package docgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"html/template"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Render encodes a document as Markdown, HTML or JSON. The same document gives the same bytes.
func Render(d *Document, format string) ([]byte, error) {
	switch format {
	case FormatMarkdown:
		return renderMarkdown(d), nil
	case FormatHTML:
		return renderHTML(d)
	case FormatJSON:
		b, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	}
	return nil, fmt.Errorf("%w: format %q (want md, html or json; pdf is printed from html)", ErrRequest, format)
}

func citeText(cs []Cite) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = "leaf " + strconv.FormatUint(c.Leaf, 10) + ", event " + c.Event + ", " + shortDigest(c.Digest)
	}
	return strings.Join(parts, "; ")
}

// shortDigest shows the first 12 hex digits of a citation's digest (the JSON form has all of it).
func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}

// mdEscape keeps a value from the log from being read as Markdown.
var mdEscape = strings.NewReplacer("\\", "\\\\", "`", "\\`", "*", "\\*", "_", "\\_", "[", "\\[", "]", "\\]",
	"<", "&lt;", ">", "&gt;", "|", "\\|", "#", "\\#", "\r", " ", "\n", " ")

func mdItem(w *bytes.Buffer, it Item) {
	if it.Missing != nil {
		fmt.Fprintf(w, "- **MISSING — %s:** %s. *Supplied by:* %s\n", mdEscape.Replace(it.Label), mdEscape.Replace(it.Missing.What), mdEscape.Replace(it.Missing.Supplied))
		return
	}
	w.WriteString("- ")
	if it.Label != "" {
		fmt.Fprintf(w, "**%s:** ", mdEscape.Replace(it.Label))
	}
	w.WriteString(mdEscape.Replace(it.Text))
	if len(it.Cites) > 0 {
		fmt.Fprintf(w, " — (%s)", citeText(it.Cites))
	}
	w.WriteByte('\n')
}

func renderMarkdown(d *Document) []byte {
	var w bytes.Buffer
	fmt.Fprintf(&w, "# %s\n\n", mdEscape.Replace(d.Title))
	for _, it := range d.Summary {
		mdItem(&w, it)
	}
	fmt.Fprintf(&w, "- **Kind:** %s\n- **As of:** %s\n", d.Kind, d.At)
	if d.Period != nil {
		fmt.Fprintf(&w, "- **Period:** %s to %s\n", d.Period.From, d.Period.To)
	}
	var walk func(ss []Section, depth int)
	walk = func(ss []Section, depth int) {
		for _, s := range ss {
			fmt.Fprintf(&w, "\n%s %s\n\n", strings.Repeat("#", depth+2), mdEscape.Replace(s.Title()))
			for _, it := range s.Items {
				mdItem(&w, it)
			}
			for _, t := range s.Tables {
				fmt.Fprintf(&w, "\n*%s*\n\n|", mdEscape.Replace(t.Caption))
				for _, c := range t.Columns {
					w.WriteString(" " + mdEscape.Replace(c) + " |")
				}
				w.WriteString(" source |\n|")
				for range len(t.Columns) + 1 {
					w.WriteString("---|")
				}
				w.WriteByte('\n')
				for _, r := range t.Rows {
					w.WriteString("|")
					for _, c := range r.Cells {
						w.WriteString(" " + mdEscape.Replace(c) + " |")
					}
					w.WriteString(" " + orDash(citeText(r.Cites)) + " |\n")
				}
			}
			walk(s.Sections, depth+1)
		}
	}
	walk(d.Sections, 0)
	fmt.Fprintf(&w, "\n## Checkpoint\n\nGenerated against the first %d events of the log %s. Every citation above names a leaf of this tree; "+
		"prove one with GET /v1/systems/%s/proofs/inclusion?index=LEAF&size=%d, and check the checkpoint with the note verifier key `%s`.\n\n```text\n%s```\n",
		d.Checkpoint.TreeSize, d.Checkpoint.Origin, d.System, d.Checkpoint.TreeSize, d.Checkpoint.VKey, d.Checkpoint.Note)
	return w.Bytes()
}

// flatSection is a section with its heading level, for the HTML template.
type flatSection struct {
	Level int
	*Section
}

func flatten(ss []Section, level int, out []flatSection) []flatSection {
	for i := range ss {
		out = append(out, flatSection{Level: min(level, 6), Section: &ss[i]})
		out = flatten(ss[i].Sections, level+1, out)
	}
	return out
}

var htmlDoc = template.Must(template.New("doc").Funcs(template.FuncMap{"cites": citeText}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8" />
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'" />
<title>{{.D.Title}}</title>
<style>
body { font-family: "DejaVu Sans", sans-serif; font-size: 10pt; margin: 2em; color: #111; }
h1 { font-size: 16pt; } h2 { font-size: 13pt; border-bottom: 1px solid #999; margin-top: 1.6em; } h3 { font-size: 11pt; } h4 { font-size: 10pt; }
.cite { color: #555; font-size: 8pt; } .missing { color: #a00; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 8pt; } td, th { border: 1px solid #bbb; padding: 2px 4px; text-align: left; vertical-align: top; }
pre { font-size: 8pt; white-space: pre-wrap; word-break: break-all; }
</style>
</head>
<body>
<h1>{{.D.Title}}</h1>
<ul class="summary">
{{range .D.Summary}}{{template "item" .}}{{end}}<li><b>Kind:</b> {{.D.Kind}}</li>
<li><b>As of:</b> {{.D.At}}</li>
{{with .D.Period}}<li><b>Period:</b> {{.From}} to {{.To}}</li>
{{end}}</ul>
{{range .Flat}}{{if eq .Level 2}}<h2>{{.Title}}</h2>{{else if eq .Level 3}}<h3>{{.Title}}</h3>{{else}}<h4>{{.Title}}</h4>{{end}}
{{if .Items}}<ul>
{{range .Items}}{{template "item" .}}{{end}}</ul>
{{end}}{{range .Tables}}<table>
<caption>{{.Caption}}</caption>
<tr>{{range .Columns}}<th>{{.}}</th>{{end}}<th>source</th></tr>
{{range .Rows}}<tr>{{range .Cells}}<td>{{.}}</td>{{end}}<td class="cite">{{cites .Cites}}</td></tr>
{{end}}</table>
{{end}}{{end}}<h2 id="provenance">Checkpoint</h2>
<p>Generated against the first {{.D.Checkpoint.TreeSize}} events of the log {{.D.Checkpoint.Origin}}. Every citation above names a leaf of this tree; prove one with GET /v1/systems/{{.D.System}}/proofs/inclusion?index=LEAF&amp;size={{.D.Checkpoint.TreeSize}}, and check the checkpoint with the note verifier key <code>{{.D.Checkpoint.VKey}}</code>.</p>
<pre id="checkpoint">{{.D.Checkpoint.Note}}</pre>
</body>
</html>
{{define "item"}}{{if .Missing}}<li class="missing"><b>MISSING — {{.Label}}:</b> {{.Missing.What}}. <i>Supplied by:</i> {{.Missing.Supplied}}</li>
{{else}}<li>{{if .Label}}<b>{{.Label}}:</b> {{end}}{{.Text}}{{if .Cites}} <span class="cite">({{cites .Cites}})</span>{{end}}</li>
{{end}}{{end}}`))

func renderHTML(d *Document) ([]byte, error) {
	var w bytes.Buffer
	if err := htmlDoc.Execute(&w, struct {
		D    *Document
		Flat []flatSection
	}{d, flatten(d.Sections, 2, nil)}); err != nil {
		return nil, err
	}
	return w.Bytes(), nil
}

// ErrNoChromium: PDF output needs headless Chromium, which is not installed.
var ErrNoChromium = errors.New("pdf needs headless Chromium (chromium or google-chrome on PATH)")

// ChromiumPath finds a Chromium binary, or returns "".
func ChromiumPath() string {
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// pdfSlots bounds how many Chromium processes print at once: each is a browser (hundreds of MB, seconds of CPU),
// so a burst of PDF requests must queue rather than exhaust the host.
var pdfSlots = make(chan struct{}, 2)

// PDF prints a document's HTML to PDF with headless Chromium. The PDF is not byte-reproducible (it embeds times
// and ids), which is why a PDF document is recorded and signed under its HTML's digest. At most two print at
// once; others wait, as long as ctx allows.
func PDF(ctx context.Context, htmlDoc []byte) ([]byte, error) {
	bin := ChromiumPath()
	if bin == "" {
		return nil, ErrNoChromium
	}
	select {
	case pdfSlots <- struct{}{}:
		defer func() { <-pdfSlots }()
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting to print a PDF: %w", ctx.Err())
	}
	dir, err := os.MkdirTemp("", "cairn-pdf-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	in, out := filepath.Join(dir, "doc.html"), filepath.Join(dir, "doc.pdf")
	if err := os.WriteFile(in, htmlDoc, 0o600); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// The document is a local file with a CSP that forbids every fetch; the flags keep Chromium itself off the
	// network too (no background services, updates or sync).
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
		"--no-first-run", "--user-data-dir="+filepath.Join(dir, "profile"), "--no-pdf-header-footer",
		"--print-to-pdf="+out, "file://"+in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("chromium: %w: %s", err, lastLine(stderr.String()))
	}
	b, err := os.ReadFile(out)
	if err != nil || !bytes.HasPrefix(b, []byte("%PDF-")) {
		return nil, fmt.Errorf("chromium wrote no PDF: %s", lastLine(stderr.String()))
	}
	return b, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// ExtractCheckpoint returns the signed checkpoint a rendered document (md, html or json) ends with.
func ExtractCheckpoint(b []byte) (string, error) {
	t := bytes.TrimSpace(b)
	switch {
	case bytes.HasPrefix(t, []byte("{")):
		var d struct {
			Checkpoint Checkpoint `json:"checkpoint"`
		}
		if err := json.Unmarshal(t, &d); err != nil || d.Checkpoint.Note == "" {
			return "", errors.New("document: no checkpoint in the JSON")
		}
		return d.Checkpoint.Note, nil
	case bytes.HasPrefix(t, []byte("<!DOCTYPE html>")):
		_, rest, ok := bytes.Cut(b, []byte(`<pre id="checkpoint">`))
		note, _, ok2 := bytes.Cut(rest, []byte("</pre>"))
		if !ok || !ok2 {
			return "", errors.New("document: no checkpoint in the HTML")
		}
		return html.UnescapeString(string(note)), nil
	}
	i := bytes.LastIndex(b, []byte("\n## Checkpoint\n"))
	if i < 0 {
		return "", errors.New("document: no checkpoint section")
	}
	_, rest, ok := bytes.Cut(b[i:], []byte("\n```text\n"))
	note, _, ok2 := bytes.Cut(rest, []byte("```\n"))
	if !ok || !ok2 {
		return "", errors.New("document: no checkpoint in the Markdown")
	}
	return string(note), nil
}
