package docgen

import "testing"

// FuzzExtractCheckpoint: arbitrary documents never panic the checkpoint extractor.
func FuzzExtractCheckpoint(f *testing.F) {
	f.Add([]byte("# t\n\n## Checkpoint\n\n```text\no\n1\nAAAA\n\n— o sig\n```\n"))
	f.Add([]byte("<!DOCTYPE html><pre id=\"checkpoint\">o&#10;1</pre>"))
	f.Add([]byte(`{"checkpoint":{"note":"o\n1\n"}}`))
	f.Fuzz(func(t *testing.T, b []byte) { ExtractCheckpoint(b) })
}
