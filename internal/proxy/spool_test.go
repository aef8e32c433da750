package proxy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func readAll(t *testing.T, sp *Spool) []string {
	t.Helper()
	var out []string
	for {
		recs, pos, err := sp.Next(3)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			out = append(out, string(r))
		}
		if err := sp.Ack(pos); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSpoolRoundTripEncryptedAndTornTail(t *testing.T) {
	dir, key := t.TempDir(), testSpoolKey()
	sp, err := OpenSpool(dir, key, 0)
	if err != nil {
		t.Fatal(err)
	}
	sp.maxSeg = 200 // several segments
	for i := 0; i < 10; i++ {
		if err := sp.Put([]byte(fmt.Sprintf(`{"subject":"Jane Roe","i":%d}`, i)), i == 9); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing personal on disk in clear.
	files, _ := filepath.Glob(filepath.Join(dir, "*.spool"))
	if len(files) < 2 {
		t.Fatalf("%d segments, want several", len(files))
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte("Jane")) {
			t.Fatalf("%s holds a personal value in clear", f)
		}
	}
	recs, pos, err := sp.Next(4)
	if err != nil || len(recs) != 4 {
		t.Fatalf("Next: %d records, %v", len(recs), err)
	}
	if err := sp.Ack(pos); err != nil {
		t.Fatal(err)
	}
	got := []string{string(recs[0]), "", "", string(recs[3])}
	sp.Close()
	if got[0] != `{"subject":"Jane Roe","i":0}` || got[3] != `{"subject":"Jane Roe","i":3}` {
		t.Fatalf("read back %q", got)
	}

	// Reopened: delivery resumes after the cursor; a torn tail is cut, not misread.
	last := files[len(files)-1]
	f, _ := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{40, 0, 0, 0, 1, 2})
	f.Close()
	sp, err = OpenSpool(dir, key, 0)
	if err != nil {
		t.Fatal(err)
	}
	rest := readAll(t, sp)
	sp.Put([]byte(`{"i":10}`), true)
	rest = append(rest, readAll(t, sp)...)
	sp.Close()
	if len(rest) != 7 || rest[0] != `{"subject":"Jane Roe","i":4}` || rest[6] != `{"i":10}` {
		t.Fatalf("after reopening: %q", rest)
	}

}

func TestSpoolWrongKey(t *testing.T) {
	dir := t.TempDir()
	sp, _ := OpenSpool(dir, testSpoolKey(), 0)
	sp.Put([]byte(`{"i":1}`), true)
	sp.Close()
	sp, _ = OpenSpool(dir, testSpoolKey(), 0)
	defer sp.Close()
	if _, _, err := sp.Next(1); err == nil {
		t.Fatal("a record opened under the wrong key")
	}
}
