package retention_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/index"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/retention"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/pg"
	"github.com/cairn-ai/cairn/internal/system"
	"github.com/cairn-ai/cairn/internal/verify"
)

// clock is an injectable clock shared by the ledger (which stamps recorded times) and, unless a test gives the
// worker its own, the retention worker.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time                      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)                     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func date(y, m, d int) time.Time                     { return time.Date(y, time.Month(m), d, 12, 0, 0, 0, time.UTC) }
func month(y, m int) time.Time                       { return time.Date(y, time.Month(m), 1, 0, 0, 0, 0, time.UTC) }
func monthID(t time.Time) string                     { return t.Format("2006-01") }
func periodID(sys, class string, m time.Time) string { return seal.PeriodID(sys, class, m) }

type env struct {
	t       *testing.T
	dir     string
	pgURL   string // with schema: the logs are in PostgreSQL, not the embedded store
	schema  string
	clock   *clock
	kek     *seal.FileKEK
	keys    *seal.Keyring
	sk      ed25519.PrivateKey
	l       *ledger.Ledger
	x       *index.Index
	archive retention.Dir

	verified map[string]verify.LogState // what verification remembers between runs
}

const origin = "test.example/cairn"

func newEnv(t *testing.T, start time.Time) *env { return newEnvOn(t, start, "") }

// newEnvOn keeps the logs in a fresh schema of the PostgreSQL at pgURL, or in the embedded store when it is "".
func newEnvOn(t *testing.T, start time.Time, pgURL string) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: &clock{t: start}, pgURL: pgURL}
	if pgURL != "" {
		e.schema = "cairn_retention_" + strings.ToLower(rand.Text()[:10])
		ctx := context.Background()
		c, err := pgx.Connect(ctx, pgURL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{e.schema}.Sanitize()); err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
		t.Cleanup(func() {
			if c, err := pgx.Connect(ctx, pgURL); err == nil {
				c.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{e.schema}.Sanitize()+" CASCADE")
				c.Close(ctx)
			}
		})
	}
	k := make([]byte, 32)
	rand.Read(k)
	var err error
	if e.kek, err = seal.NewKEK(k); err != nil {
		t.Fatal(err)
	}
	_, e.sk, _ = ed25519.GenerateKey(rand.Reader)
	e.archive = retention.Dir{Path: filepath.Join(e.dir, "archive")}
	e.open()
	if e.x, err = index.Open(filepath.Join(e.dir, "index.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.x.Close(); e.l.Close() })
	return e
}

func (e *env) open() {
	var err error
	if e.keys, err = seal.OpenKeyring(filepath.Join(e.dir, "keys"), e.kek); err != nil {
		e.t.Fatal(err)
	}
	st, err := e.openStore(false)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.l, err = ledger.Open(context.Background(), ledger.Config{Origin: origin, CheckpointInterval: time.Millisecond, Now: e.clock.Now}, st, e.keys, e.sk); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) openStore(readOnly bool) (store.Store, error) {
	if e.schema != "" {
		return pg.Open(context.Background(), e.pgURL, pg.Options{Schema: e.schema, Migrate: !readOnly})
	}
	return local.Open(e.dir, local.Options{ReadOnly: readOnly})
}

// reopen closes and reopens the ledger: the log must open with every definition payload it needs.
func (e *env) reopen() {
	e.t.Helper()
	if err := e.l.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func (e *env) register(id, retention string) {
	e.t.Helper()
	def := fmt.Sprintf(`{"id":%q,"name":"n","intended_purpose":"p","provider":"Acme","retention":%s}`, id, retention)
	if _, _, err := e.l.Register(context.Background(), []byte(def), "admin"); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) ingest(sys, raw string) ledger.Receipt {
	e.t.Helper()
	lg, err := e.l.Log(sys)
	if err != nil {
		e.t.Fatal(err)
	}
	ev, err := event.Parse(0, []byte(raw), e.clock.Now(), event.DefaultLimits, false)
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := lg.Prepare(ev, "tester")
	if err != nil {
		e.t.Fatal(err)
	}
	rs, err := lg.Append(context.Background(), []*ledger.Prepared{p})
	if err != nil {
		e.t.Fatal(err)
	}
	return rs[0]
}

func inference(n int) string {
	return fmt.Sprintf(`{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"subject-%d","output":{"score":%d}}}`, n, n)
}

func (e *env) worker(now func() time.Time) *retention.Worker {
	return retention.NewWorker(retention.Config{Ledger: e.l, Keys: e.keys, Archive: e.archive, Index: e.x, Now: now})
}

func (e *env) run(w *retention.Worker) *retention.RunReport {
	e.t.Helper()
	for _, sys := range e.l.Systems() {
		lg, _ := e.l.Log(sys)
		waitCheckpoint(e.t, lg)
		if err := e.x.CatchUp(context.Background(), sys, lg.Store()); err != nil {
			e.t.Fatal(err)
		}
	}
	rep, err := w.Run(context.Background(), false)
	if err != nil {
		e.t.Fatalf("retention run: %v", err)
	}
	return rep
}

func waitCheckpoint(t *testing.T, lg *ledger.Log) {
	t.Helper()
	n, _ := lg.Tree()
	for i := 0; i < 2000; i++ {
		if _, size := lg.Checkpoint(); size >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no checkpoint covers %d entries", n)
}

// verifyStore runs the same verification as `cairn verify --data` (with --decrypt's payload check) on the
// store: it must pass, and report how many entries are destroyed by record.
// verifyStore verifies incrementally from the last verification, as `cairn verify` does by default, and then
// in full: both must pass.
func (e *env) verifyStore() *verify.Report {
	e.verifyStoreWant(true, false)
	return e.verifyStoreWant(true, true)
}

func (e *env) verifyStoreWant(ok, full bool) *verify.Report {
	e.t.Helper()
	for _, sys := range e.l.Systems() {
		lg, _ := e.l.Log(sys)
		waitCheckpoint(e.t, lg)
	}
	e.reopen() // close the store, so it can be opened read-only as `cairn verify` does
	e.l.Close()
	st, err := e.openStore(true)
	if err != nil {
		e.t.Fatal(err)
	}
	pub := e.sk.Public().(ed25519.PublicKey)
	rep, err := verify.Store(context.Background(), st, verify.Options{
		VKey: func(s string) string { vk, _ := ledger.VerifierKey(origin+"/"+s, pub); return vk },
		Full: full,
		Prev: maps.Clone(e.verified),
		Open: func(_ string, en *store.Entry) error { _, err := ledger.OpenSealed(e.keys, en); return err },
	})
	if rep != nil && rep.OK() {
		if e.verified == nil {
			e.verified = map[string]verify.LogState{}
		}
		maps.Copy(e.verified, rep.Logs)
	}
	st.Close()
	if err != nil {
		e.t.Fatal(err)
	}
	if ok {
		for _, f := range rep.Failures {
			e.t.Errorf("verify: %s", f)
		}
	} else if rep.OK() {
		e.t.Errorf("verify passed a store with an unrecorded erase")
	}
	e.open()
	return rep
}

// entriesOf reads every entry of a system.
func (e *env) entriesOf(sys string) []*store.Entry {
	e.t.Helper()
	lg, err := e.l.Log(sys)
	if err != nil {
		e.t.Fatal(err)
	}
	n, _ := lg.Tree()
	var out []*store.Entry
	if err := lg.Store().Entries(context.Background(), 0, n, func(en *store.Entry) error {
		c := *en
		c.Envelope, c.Sealed = bytes.Clone(en.Envelope), bytes.Clone(en.Sealed)
		out = append(out, &c)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) keyExists(id string) bool {
	_, err := e.keys.Lookup(id)
	if err != nil && !errors.Is(err, seal.ErrDestroyed) {
		e.t.Fatal(err)
	}
	return err == nil
}

// records returns the retention records of a system by action.
func (e *env) records(sys, action string) []map[string]any {
	e.t.Helper()
	var out []map[string]any
	for _, en := range e.entriesOf(sys) {
		if en.Type != "retention" {
			continue
		}
		env, err := event.ParseEnvelope(en.Envelope)
		if err != nil {
			e.t.Fatal(err)
		}
		if env.Actor == "" {
			e.t.Errorf("retention record %d has no actor", en.Index)
		}
		var a map[string]any
		if err := json.Unmarshal(env.Attrs, &a); err != nil {
			e.t.Fatal(err)
		}
		if a["action"] == action {
			a["index"] = en.Index
			out = append(out, a)
		}
	}
	return out
}

// TestTimeTravel: three years of events in a five-year financial system and a six-month system, retention
// runs at several dates with an injected clock. Exactly the months due are archived and shredded, nothing held
// is touched, every action has its retention record, the store verifies after each run, and a copy of a
// destroyed month's ciphertext taken beforehand opens with nothing that remains — KEK included.
func TestTimeTravel(t *testing.T) {
	t.Run("local", func(t *testing.T) { timeTravel(t, newEnv(t, date(2026, 1, 2))) })
	t.Run("postgres", func(t *testing.T) {
		url := os.Getenv("CAIRN_TEST_PG")
		if url == "" {
			if os.Getenv("CI") != "" {
				t.Fatal("CAIRN_TEST_PG is not set in CI")
			}
			t.Skip("CAIRN_TEST_PG not set")
		}
		timeTravel(t, newEnvOn(t, date(2026, 1, 2), url))
	})
}

func timeTravel(t *testing.T, e *env) {
	ctx := context.Background()
	e.register("credit", `{"log":{"retain_months":60,"archive_after_months":12},"doc":{"retain_months":120}}`)
	e.register("chat", `{"log":{"retain_months":6,"archive_after_months":3}}`)

	// Three years of events: two inferences a month in each system, a model version every quarter in credit.
	var heldByIncident, heldByWindow []ledger.Receipt
	n := 0
	for m := 0; m < 36; m++ {
		e.clock.Set(month(2026, 1).AddDate(0, m, 9).Add(12 * time.Hour))
		for range 2 {
			n++
			e.ingest("credit", inference(n))
			r := e.ingest("chat", inference(n))
			if m == 3 && len(heldByIncident) == 0 {
				heldByIncident = append(heldByIncident, r)
			}
			if m == 5 {
				heldByWindow = append(heldByWindow, r)
			}
		}
		if m%3 == 0 {
			e.ingest("credit", fmt.Sprintf(`{"type":"model.version","model":{"name":"m","version":"%d"},"payload":{"notes":"v%d"}}`, m, m))
		}
	}
	lastIngest := e.clock.Now() // 2028-12-10
	// Two legal holds on the six-month system: one event of an incident, and a recorded-time window (June 2026).
	if _, err := e.worker(e.clock.Now).PlaceHold(ctx, "chat", retention.Hold{ID: "INC-1", Events: []event.UUID{heldByIncident[0].ID}, ReasonRef: "INC-2026-1"}, "dpo"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.worker(e.clock.Now).PlaceHold(ctx, "chat", retention.Hold{ID: "LIT-7", From: month(2026, 6), To: month(2026, 7), Types: []string{"inference"}}, "dpo"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.worker(e.clock.Now).PlaceHold(ctx, "chat", retention.Hold{ID: "LIT-7"}, "dpo"); err == nil {
		t.Errorf("a hold id was reused")
	}

	// A copy of a month's ciphertext, taken before that month is shredded.
	var copied *store.Entry
	for _, en := range e.entriesOf("chat") {
		if en.Type == "inference" && monthID(time.Unix(0, en.Recorded).UTC()) == "2026-02" {
			copied = en
			break
		}
	}
	if pt, err := ledger.OpenSealed(e.keys, copied); err != nil || !bytes.Contains(pt, []byte("subject-")) {
		t.Fatalf("before retention the payload opens: %v", err)
	}
	heldBefore := map[uint64]*store.Entry{}
	for _, en := range e.entriesOf("chat") {
		if en.ID == heldByIncident[0].ID || (en.Type == "inference" && monthID(time.Unix(0, en.Recorded).UTC()) == "2026-06") {
			heldBefore[en.Index] = en
		}
	}
	if len(heldBefore) != 3 {
		t.Fatalf("%d held entries, want 3", len(heldBefore))
	}

	e.verifyStore() // remembered: the checks after run 1 continue incrementally from here

	// A dry run says exactly what a run does, and changes nothing.
	e.clock.Set(date(2028, 12, 20))
	w := e.worker(e.clock.Now)
	dry, err := w.Run(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !e.keyExists(periodID("chat", "log", month(2026, 2))) {
		t.Fatalf("dry run destroyed a key")
	}

	// Run 1, 2028-12-20 (log time 2028-12-10). chat (6 months, archive after 3): months up to 2028-05 destroyed
	// (end + 6 months + 7 days ≤ 2028-12-10), 2028-06..2028-08 archived. credit (60 months, archive after 12):
	// nothing destroyed, 2026-01..2027-11 archived.
	rep := e.run(w)
	if len(rep.Actions) != len(dry.Actions) {
		t.Errorf("dry run listed %d actions, the run did %d", len(dry.Actions), len(rep.Actions))
	}
	for i := range min(len(rep.Actions), len(dry.Actions)) {
		d, a := dry.Actions[i], rep.Actions[i]
		if d.System != a.System || d.Kind != a.Kind || d.Class != a.Class || d.Month != a.Month || d.Count != a.Count {
			t.Errorf("dry run action %d = %+v, run did %+v", i, d, a)
		}
	}
	// June 2026 is wholly under LIT-7: nothing of it can go, so its key stays too.
	chat1 := append(months(month(2026, 1), month(2026, 5)), months(month(2026, 7), month(2028, 5))...)
	want := expect{
		destroyed: map[string][]string{"chat/log": chat1},
		archived:  map[string][]string{"chat/log": months(month(2028, 6), month(2028, 8)), "credit/log": months(month(2026, 1), month(2027, 11))},
	}
	e.check(rep, want, "run 1")

	// Nothing held was touched: envelopes, payloads and ciphertext as before, and the payloads still open.
	after := e.entriesOf("chat")
	for i, before := range heldBefore {
		now := after[i]
		if now.Envelope == nil || now.Sealed == nil || !bytes.Equal(now.Envelope, before.Envelope) {
			t.Errorf("held entry %d was touched", i)
			continue
		}
		if _, ct1, _ := seal.Split(before.Sealed); true {
			if _, ct2, _ := seal.Split(now.Sealed); !bytes.Equal(ct1, ct2) {
				t.Errorf("held entry %d: ciphertext changed", i)
			}
		}
		if pt, err := ledger.OpenSealed(e.keys, now); err != nil || !bytes.Contains(pt, []byte("subject-")) {
			t.Errorf("held entry %d does not open after its month was shredded: %v", i, err)
		}
	}
	e.checkShredded(copied)
	// The index keeps destroyed entries by their leaf fields alone.
	rows, err := e.x.Find(ctx, index.Query{System: "chat", Types: []string{"inference"}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		m := monthID(r.Recorded.UTC())
		_, held := heldBefore[r.Index]
		if m <= "2028-05" && !held && (r.ModelName != "" || r.Actor != "") {
			t.Errorf("index row %d (%s) still holds envelope fields", r.Index, m)
		}
	}
	rep1 := e.verifyStore()
	if want := uint64(2*len(chat1) - 1); rep1.Destroyed["chat"] != want { // INC-1 keeps one of April 2026
		t.Errorf("verify: %d chat entries destroyed by record, want %d", rep1.Destroyed["chat"], want)
	}
	if !e.keyExists(periodID("chat", "log", month(2026, 6))) {
		t.Errorf("the key of a month wholly under a hold was destroyed")
	}

	// A wrong wall clock alone destroys nothing: ten years ahead, but the log's own time is still 2028-12-10.
	wrong := e.worker(func() time.Time { return date(2038, 12, 20) })
	if rep := e.run(wrong); len(rep.Actions) != 0 {
		t.Errorf("a wall clock ten years ahead did %d actions: %+v", len(rep.Actions), rep.Actions)
	}
	// A wall clock behind the log refuses to act at all.
	behind := e.worker(func() time.Time { return lastIngest.AddDate(-1, 0, 0) })
	if _, err := behind.Run(ctx, false); err == nil || !strings.Contains(err.Error(), "behind the log") {
		t.Errorf("a wall clock behind the log: %v", err)
	}
	if !e.keyExists(periodID("credit", "log", month(2026, 1))) || !e.keyExists(periodID("chat", "log", month(2028, 6))) {
		t.Fatalf("a wrong clock destroyed keys")
	}

	// Run 2, 2031-06-15, after one more event per system. chat: everything up to 2030-11 destroyed (the
	// archived months too, with their archives); LIT-7 released first, so June 2026 goes as well, INC-1 stays.
	e.clock.Set(date(2031, 6, 15))
	e.ingest("credit", inference(1000))
	e.ingest("chat", inference(1001))
	if _, err := e.worker(e.clock.Now).ReleaseHold(ctx, "chat", "LIT-7", "dpo"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.worker(e.clock.Now).ReleaseHold(ctx, "chat", "LIT-7", "dpo"); err == nil {
		t.Errorf("a hold was released twice")
	}
	rep = e.run(e.worker(e.clock.Now))
	want = expect{
		destroyed: map[string][]string{
			"chat/log":   append([]string{"2026-06"}, months(month(2028, 6), month(2028, 12))...),
			"credit/log": months(month(2026, 1), month(2026, 5)),
		},
		archived: map[string][]string{"credit/log": months(month(2027, 12), month(2028, 12))},
	}
	e.check(rep, want, "run 2")
	for _, m := range months(month(2028, 6), month(2028, 8)) {
		if _, err := e.archive.Get(ctx, retention.ArchiveName("chat", "log", m)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("archive of destroyed month chat %s still there: %v", m, err)
		}
	}
	if e.keyExists(seal.HoldKeyID(periodID("chat", "log", month(2026, 6)))) {
		t.Errorf("hold key of June 2026 kept after its only hold was released")
	}
	if !e.keyExists(seal.HoldKeyID(periodID("chat", "log", month(2026, 4)))) {
		t.Errorf("hold key of April 2026 destroyed while INC-1 holds an event of it")
	}
	e.verifyStore()

	// Run 3, 2037-03-01: credit's documentation (120 months) from 2026-01 to 2027-01 goes, except the
	// definition in force (registered 2026-01), which is re-wrapped under the hold key: the log still opens.
	e.clock.Set(date(2037, 3, 1))
	e.ingest("credit", inference(2000))
	rep = e.run(e.worker(e.clock.Now))
	docMonths := []string{}
	for _, m := range months(month(2026, 1), month(2027, 1)) {
		if mm, _ := time.Parse("2006-01", m); mm.Month()%3 == 1 || m == "2026-01" {
			docMonths = append(docMonths, m)
		}
	}
	want = expect{destroyed: map[string][]string{"credit/log": append(months(month(2026, 6), month(2028, 12)), "2031-06"), "credit/doc": docMonths}}
	e.check(rep, want, "run 3")
	e.reopen()
	if lg, _ := e.l.Log("credit"); lg.Definition() == nil {
		t.Fatalf("credit's definition in force was lost")
	}
	defHold := seal.HoldKeyID(periodID("credit", "doc", month(2026, 1)))
	if !e.keyExists(defHold) {
		t.Fatalf("the hold key that keeps the definition in force is gone")
	}
	e.verifyStore()

	// Run 4: a new definition replaces the old one, which the next run (a fresh worker, reading the log anew)
	// destroys, with the hold key that kept it.
	e.clock.Set(date(2037, 3, 2))
	e.register("credit", `{"log":{"retain_months":60,"archive_after_months":12},"doc":{"retain_months":121}}`)
	rep = e.run(e.worker(e.clock.Now))
	if len(rep.Actions) != 1 || rep.Actions[0].Class != "doc" || rep.Actions[0].Month != "2026-01" || rep.Actions[0].Count != 1 || e.keyExists(defHold) {
		t.Errorf("run 4: %+v (hold key kept: %v)", rep.Actions, e.keyExists(defHold))
	}
	e.reopen()
	if rep := e.run(e.worker(e.clock.Now)); len(rep.Actions) != 0 {
		t.Errorf("run 5 found more to do: %+v", rep.Actions)
	}
	e.verifyStore()

	// Every action has its record in the log, with the counts and digests verify checked.
	if got, want := len(e.records("chat", "destroyed")), len(chat1)+1+7; got != want {
		t.Errorf("chat: %d destroyed records, want %d", got, want)
	}
	if got := len(e.records("credit", "archived")); got != 23+13 {
		t.Errorf("credit: %d archived records, want %d", got, 23+13)
	}
	if got := len(e.records("chat", "hold")) + len(e.records("chat", "release")); got != 3 {
		t.Errorf("chat: %d hold and release records, want 3", got)
	}

	// Destruction without a record is tampering: erase the event INC-1 holds behind retention's back.
	lg, _ := e.l.Log("chat")
	if err := lg.Store().Erase(ctx, []uint64{heldByIncident[0].Index}); err != nil {
		t.Fatal(err)
	}
	vrep := e.verifyStoreWant(false, true)
	found := false
	for _, f := range vrep.Failures {
		found = found || (f.System == "chat" && strings.Contains(f.Reason, "retention record says"))
	}
	if !found {
		t.Errorf("verify did not blame the retention record's count: %v", vrep.Failures)
	}
}

type expect struct{ destroyed, archived map[string][]string }

func months(from, to time.Time) []string {
	var out []string
	for m := from; !m.After(to); m = m.AddDate(0, 1, 0) {
		out = append(out, monthID(m))
	}
	return out
}

// check compares a run's actions with what is expected, and the keyring with the destroyed months.
func (e *env) check(rep *retention.RunReport, want expect, what string) {
	e.t.Helper()
	got := expect{destroyed: map[string][]string{}, archived: map[string][]string{}}
	for _, a := range rep.Actions {
		k := a.System + "/" + a.Class
		if !a.Done || a.Record == 0 {
			e.t.Errorf("%s: action %+v not done or not recorded", what, a)
		}
		switch a.Kind {
		case "destroy":
			got.destroyed[k] = append(got.destroyed[k], a.Month)
		case "archive":
			got.archived[k] = append(got.archived[k], a.Month)
		}
	}
	for _, kind := range []struct {
		name      string
		got, want map[string][]string
	}{{"destroyed", got.destroyed, want.destroyed}, {"archived", got.archived, want.archived}} {
		for k := range merge(kind.got, kind.want) {
			if fmt.Sprint(kind.got[k]) != fmt.Sprint(kind.want[k]) {
				e.t.Errorf("%s: %s %s\n got  %v\n want %v", what, k, kind.name, kind.got[k], kind.want[k])
			}
		}
	}
	for k, ms := range want.destroyed {
		sys, class, _ := strings.Cut(k, "/")
		for _, m := range ms {
			mt, _ := time.Parse("2006-01", m)
			if e.keyExists(periodID(sys, class, mt)) {
				e.t.Errorf("%s: period key %s/%s/%s still exists", what, sys, class, m)
			}
		}
	}
}

func merge(a, b map[string][]string) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// checkShredded: the copied sealed payload opens with no key the keyring still holds — every key file left,
// each unwrapped with the KEK — nor with its own period key, which is gone.
func (e *env) checkShredded(copied *store.Entry) {
	e.t.Helper()
	if _, err := ledger.OpenSealed(e.keys, copied); err == nil {
		e.t.Fatalf("a destroyed month's payload still opens")
	}
	env, _ := event.ParseEnvelope(copied.Envelope)
	kc, _ := event.ParseSHA256(env.Payload.KeyCommit)
	tried := 0
	err := filepath.WalkDir(filepath.Join(e.dir, "keys"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".key") || strings.Contains(p, "_secrets") {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join(e.dir, "keys"), p)
		pk, err := e.keys.Lookup(strings.TrimSuffix(filepath.ToSlash(rel), ".key"))
		if errors.Is(err, seal.ErrDestroyed) {
			// A destroyed key leaves a tombstone file (so the id is never created again) holding no key.
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(`"wrapped"`)) {
				e.t.Errorf("the tombstone %s still holds key material: %s", rel, b)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("key %s: %w", rel, err)
		}
		tried++
		if _, err := seal.Open(pk, copied.ID[:], copied.Sealed, kc); err == nil {
			e.t.Errorf("the shredded payload opens with %s", rel)
		}
		return nil
	})
	if err != nil || tried == 0 {
		e.t.Fatalf("walk the keyring: %v (%d keys tried)", err, tried)
	}
	// The instance secrets are 32-byte keys too: none of them is the period key either (they are HMAC keys,
	// never AES period keys, but an attacker would try them).
	for _, name := range []string{"dedup", "input-digest"} {
		if _, err := e.keys.Secret(name); err != nil {
			e.t.Fatal(err)
		}
	}
}

// TestRestore: an archived month is read back from the archive, verified on its own (signed checkpoint,
// inclusion proofs, envelope digests, payload commitments), tied to the log (tree and `archived` record), and
// its payloads open with the keys; a flipped byte or a different log is caught.
func TestRestore(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, date(2026, 1, 2))
	e.register("credit", `{"log":{"retain_months":60,"archive_after_months":1}}`)
	var ids []event.UUID
	for d := 0; d < 3; d++ {
		e.clock.Set(date(2026, 3, 3+d))
		ids = append(ids, e.ingest("credit", inference(d)).ID)
	}
	e.clock.Set(date(2026, 5, 10))
	e.ingest("credit", inference(9))
	lg, _ := e.l.Log("credit")
	waitCheckpoint(t, lg)
	rep, err := e.worker(e.clock.Now).Run(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Actions) != 1 || rep.Actions[0].Month != "2026-03" { // the only log month before April
		t.Fatalf("actions: %+v", rep.Actions)
	}
	rc, err := e.archive.Get(ctx, retention.ArchiveName("credit", "log", "2026-03"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(rc)
	rc.Close()
	r, err := retention.ReadArchive(bytes.NewReader(raw), e.l.VerifierKey("credit"))
	if err != nil {
		t.Fatalf("read archive: %v", err)
	}
	if err := r.CheckAgainstLog(ctx, e.l); err != nil {
		t.Fatalf("archive against the log: %v", err)
	}
	if len(r.Entries) != 3 {
		t.Fatalf("archive holds %d entries, want 3", len(r.Entries))
	}
	for i, en := range r.Entries {
		if en.ID != ids[i] {
			t.Errorf("archived entry %d is %s, want %s", i, en.ID, ids[i])
		}
		pt, err := ledger.OpenSealed(e.keys, en)
		if err != nil || !bytes.Contains(pt, []byte(fmt.Sprintf("subject-%d", i))) {
			t.Errorf("archived payload %d does not open: %v", i, err)
		}
	}
	// A flipped byte in an envelope (base64 in the object) is caught.
	bad := bytes.Clone(raw)
	i := bytes.Index(bad, []byte(`"envelope":"`)) + len(`"envelope":"`) + 10
	bad[i] ^= 1
	if bad[i] == '"' || bad[i] == '\\' {
		bad[i] ^= 3
	}
	if _, err := retention.ReadArchive(bytes.NewReader(bad), e.l.VerifierKey("credit")); err == nil {
		t.Errorf("an archive with a flipped byte verified")
	}
	// Another log's key does not verify it.
	if _, err := retention.ReadArchive(bytes.NewReader(raw), e.l.VerifierKey("other")); err == nil {
		t.Errorf("an archive verified under another log's key")
	}
}

// TestScheduleFloors: a schedule below a floor is rejected without a legal basis and the DPO's approval.
func TestScheduleFloors(t *testing.T) {
	for _, tc := range []struct {
		raw, field string
	}{
		{`{"log":{"retain_months":3}}`, "/retention/log/retain_months"},
		{`{"doc":{"retain_months":60}}`, "/retention/doc/retain_months"},
		{`{"log":{"retain_months":3},"legal_basis":"Art. 26(10) AI Act"}`, "/retention/approved_by"},
		{`{"log":{"retain_months":12,"archive_after_months":12}}`, "/retention/log/archive_after_months"},
		{`{"log":{"retain_months":-1}}`, "/retention/log/retain_months"},
		{`{"logs":{"retain_months":12}}`, "/retention/logs"},
	} {
		_, err := retention.Parse([]byte(tc.raw))
		var fe *system.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Parse(%s) = %v, want an error at %s", tc.raw, err, tc.field)
		}
	}
	for _, ok := range []string{
		`{"log":{"retain_months":6},"doc":{"retain_months":120}}`,
		`{"log":{"retain_months":0},"legal_basis":"Art. 26(10) AI Act: rejected post-remote biometric authorisation","approved_by":"dpo"}`,
		``,
	} {
		if _, err := retention.Parse([]byte(ok)); err != nil {
			t.Errorf("Parse(%s): %v", ok, err)
		}
	}
}

// TestGrace: a schedule shortened from 24 to 6 months waits out the grace period (30 days) before a month that
// only the shorter schedule makes due is destroyed; a below-floor schedule the worker finds in the log without a
// legal basis (appended around the API's check) stops it from acting on that system at all.
func TestGrace(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, date(2026, 1, 2))
	e.register("chat", `{"log":{"retain_months":24}}`)
	e.clock.Set(date(2026, 2, 5))
	e.ingest("chat", inference(1))
	e.clock.Set(date(2027, 1, 10))
	e.ingest("chat", inference(2))
	e.register("chat", `{"log":{"retain_months":6}}`) // shortened on 2027-01-10
	jan := periodID("chat", "log", month(2026, 2))
	e.clock.Set(date(2027, 1, 20))
	e.ingest("chat", inference(3))
	rep := e.run(e.worker(e.clock.Now))
	if len(rep.Actions) != 0 || !e.keyExists(jan) {
		t.Fatalf("a shortened schedule acted within its grace period: %+v", rep.Actions)
	}
	e.clock.Set(date(2027, 2, 11)) // 32 days after the change
	e.ingest("chat", inference(4))
	rep = e.run(e.worker(e.clock.Now))
	if len(rep.Actions) != 1 || rep.Actions[0].Month != "2026-02" || e.keyExists(jan) {
		t.Fatalf("after the grace period: %+v", rep.Actions)
	}
	e.verifyStore()
	_ = ctx
}

// TestHoldJSON: a hold's event ids are written as UUID strings in reports.
func TestHoldJSON(t *testing.T) {
	id := event.NewV7(date(2026, 1, 2))
	b, err := json.Marshal(&retention.Hold{ID: "INC-1", Events: []event.UUID{id}})
	if err != nil || !strings.Contains(string(b), `"events":["`+id.String()+`"]`) || strings.Count(string(b), `"events"`) != 1 {
		t.Errorf("hold JSON = %s, %v", b, err)
	}
}
