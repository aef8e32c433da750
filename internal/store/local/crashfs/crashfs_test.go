package crashfs_test

import (
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/local/crashfs"
)

func read(t *testing.T, fsys local.FS, name string) (string, bool) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return string(b), true
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCrashDurability(t *testing.T) {
	c := crashfs.New()
	must(t, c.Mkdir("/d", 0o700))
	must(t, c.SyncDir("/"))

	// a: written and synced, its name synced: durable.
	a, err := c.OpenFile("/d/a", os.O_RDWR|os.O_CREATE, 0o600)
	must(t, err)
	_, err = a.WriteAt([]byte("hello"), 0)
	must(t, err)
	must(t, a.Sync())
	// b: synced and named durably, then removed without a directory sync: it survives.
	b, err := c.OpenFile("/d/b", os.O_RDWR|os.O_CREATE, 0o600)
	must(t, err)
	_, err = b.WriteAt([]byte("lost"), 0)
	must(t, err)
	must(t, b.Sync())
	_ = b
	must(t, c.SyncDir("/d"))  // a and b named durably
	must(t, c.Remove("/d/b")) // ...then b removed, not synced: b survives

	// more data in a, never synced: lost.
	_, err = a.WriteAt([]byte(" world"), 5)
	must(t, err)
	// c: created after the directory sync: lost.
	_, err = c.OpenFile("/d/c", os.O_RDWR|os.O_CREATE, 0o600)
	must(t, err)
	// renamed file: the rename is not durable without a directory sync.
	tmp, err := c.OpenFile("/d/tmp", os.O_RDWR|os.O_CREATE, 0o600)
	must(t, err)
	_, err = tmp.Write([]byte("new"))
	must(t, err)
	must(t, tmp.Sync())
	must(t, c.Rename("/d/tmp", "/d/a"))

	if got, _ := read(t, c, "/d/a"); got != "new" {
		t.Errorf("before the crash /d/a = %q, want the renamed file", got)
	}
	c.Crash()
	if _, err := a.WriteAt([]byte("x"), 0); !errors.Is(err, crashfs.ErrCrashed) {
		t.Errorf("write after crash: %v", err)
	}
	if _, err := c.Stat("/d"); !errors.Is(err, crashfs.ErrCrashed) {
		t.Errorf("stat after crash: %v", err)
	}

	d := c.Durable()
	if got, ok := read(t, d, "/d/a"); got != "hello" || !ok {
		t.Errorf("durable /d/a = %q, %v; want the synced data of the old file", got, ok)
	}
	if got, ok := read(t, d, "/d/b"); got != "lost" || !ok {
		t.Errorf("durable /d/b = %q, %v; its removal was not synced", got, ok)
	}
	if _, ok := read(t, d, "/d/c"); ok {
		t.Errorf("/d/c survived; its creation was not synced")
	}
	if _, ok := read(t, d, "/d/tmp"); ok {
		t.Errorf("/d/tmp survived; it was not named durably")
	}
	// The image is a working file system.
	f, err := d.OpenFile("/d/a", os.O_RDWR, 0)
	must(t, err)
	_, err = f.WriteAt([]byte("J"), 0)
	must(t, err)
	if got, _ := read(t, d, "/d/a"); got != "Jello" {
		t.Errorf("after a write the image holds %q", got)
	}
}

func TestCrashTorn(t *testing.T) {
	seen := map[string]bool{}
	for seed := range uint64(200) {
		c := crashfs.New()
		f, err := c.OpenFile("/f", os.O_RDWR|os.O_CREATE, 0o600)
		must(t, err)
		must(t, c.SyncDir("/"))
		_, err = f.Write([]byte("aaaa"))
		must(t, err)
		must(t, f.Sync())
		_, err = f.Write([]byte("bbbb"))
		must(t, err)
		_, err = f.Write([]byte("cccc"))
		must(t, err)
		got, _ := read(t, c.DurableTorn(rand.New(rand.NewPCG(seed, 1))), "/f")
		want := "aaaabbbbcccc"
		if len(got) < 4 || got != want[:len(got)] {
			t.Fatalf("seed %d: torn image %q is not a prefix of %q that keeps the synced data", seed, got, want)
		}
		seen[got] = true
	}
	if len(seen) < 5 {
		t.Errorf("only %d different torn images: %v", len(seen), seen)
	}
}

func TestCrashHook(t *testing.T) {
	c := crashfs.New()
	c.SetHook(func(op crashfs.Op, name string) {
		if op == crashfs.OpSync && name == "/f" {
			c.Crash()
		}
	})
	f, err := c.OpenFile("/f", os.O_RDWR|os.O_CREATE, 0o600)
	must(t, err)
	must(t, c.SyncDir("/"))
	_, err = f.Write([]byte("x"))
	must(t, err)
	if err := f.Sync(); !errors.Is(err, crashfs.ErrCrashed) {
		t.Fatalf("sync: %v, want a crash", err)
	}
	if got, ok := read(t, c.Durable(), "/f"); !ok || got != "" {
		t.Errorf("durable /f = %q, %v; want it empty", got, ok)
	}
}
