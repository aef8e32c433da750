package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// Budget is DESIGN.md's performance budget, as the table states it next to each figure.
var Budget = struct {
	InProcess, HTTPBatched, SingleWriter, CPUus, ProofP99us, CheckpointMs, DiskRatio float64
}{100_000, 50_000, 5_000, 15, 100, 100, 1.3}

// WriteTable prints a report as readable tables.
func WriteTable(w io.Writer, r *Report) {
	m := r.Machine
	fmt.Fprintf(w, "cairn bench — %s — %s, %d CPUs, %s\n", m.Date, m.CPU, m.NumCPU, m.Go)
	fmt.Fprintf(w, "load average before %s, after %s; disk: 1.5 KiB append+fdatasync p50 %.2f ms, p99 %.2f ms (%.0f/s)\n",
		m.LoadAvg, m.LoadAfter, m.Fsync.P50, m.Fsync.P99, m.FsyncPerS)
	fmt.Fprintf(w, "events: %d-byte inference events, payload sealed, fsync on; figures are the median of %v run(s) by events/s\n\n", r.EventSize, r.Options["runs"])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if len(r.Append) > 0 {
		fmt.Fprintln(tw, "in-process (Parse → Prepare → Append)\tevents/s\truns\tack p50\tack p99\tCPU/event\tuser+sys\tcheckpoint p50\tp99\t")
		for _, s := range r.Append {
			a := s.Median
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f ms\t%.2f ms\t%.1f µs\t%.1f+%.1f\t%.1f ms\t%.1f ms\t\n", s.Name, num(a.EventsPerSec),
				runsOf(s.Runs, func(a AppendResult) float64 { return a.EventsPerSec }), a.Ack.P50, a.Ack.P99, a.CPU.TotalUs, a.CPU.UserUs, a.CPU.SysUs, a.Checkpoint.P50, a.Checkpoint.P99)
		}
		fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t")
	}
	if len(r.HTTP) > 0 {
		fmt.Fprintln(tw, "HTTP (load generator on the same 2 cores)\tevents/s\truns\treq p50\treq p99\tserver CPU/event\tuser+sys\tcheckpoint p50\tp99\t")
		for _, s := range r.HTTP {
			h := s.Median
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f ms\t%.2f ms\t%.1f µs\t%.1f+%.1f\t%.1f ms\t%.1f ms\t\n", s.Name, num(h.Load.EventsPerSec),
				runsOf(s.Runs, func(h HTTPResult) float64 { return h.Load.EventsPerSec }), h.Load.Request.P50, h.Load.Request.P99,
				h.ServerCPU.TotalUs, h.ServerCPU.UserUs, h.ServerCPU.SysUs, h.Checkpoint.P50, h.Checkpoint.P99)
		}
		fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t")
	}
	if len(r.Scale) > 0 {
		fmt.Fprintln(tw, "scale-out (batched HTTP; nodes in one process)\tevents/s\truns\treq p50\treq p99\t503s\tlost races\tserver CPU/event\tPostgreSQL CPU/event\tper system (min–max)\t")
		for _, s := range r.Scale {
			m := s.Median
			db, per := "—", "—"
			if m.DatabaseCPU != nil {
				db = fmt.Sprintf("%.1f µs", m.DatabaseCPU.TotalUs)
			}
			if ps := m.Load.PerSystem; len(ps) > 0 {
				per = num(slices.Min(ps)) + "–" + num(slices.Max(ps))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f ms\t%.2f ms\t%d\t%d\t%.1f µs\t%s\t%s\t\n", s.Name, num(m.Load.EventsPerSec),
				runsOf(s.Runs, func(x ScaleResult) float64 { return x.Load.EventsPerSec }), m.Load.Request.P50, m.Load.Request.P99,
				m.Load.Busy, m.LostRaces, m.ServerCPU.TotalUs, db, per)
		}
		fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t")
	}
	tw.Flush()
	for _, s := range r.Scale {
		if m := s.Median; m.DatabaseBytes > 0 {
			fmt.Fprintf(w, "%s: database %.0f bytes/event (tables and indexes), WAL %.0f bytes/event (whole server)\n", s.Name, m.DatabaseBytes, m.WALBytes)
		}
	}
	for _, s := range r.HTTP {
		h := s.Median
		if h.Load.ClientCPU != nil && !h.SharedProcess {
			fmt.Fprintf(w, "%s: load generator (own process) %.1f µs CPU/event; 503 pushbacks %d\n", s.Name, h.Load.ClientCPU.TotalUs, h.Load.Busy)
		}
		if x := h.Index; x != nil {
			state := "caught up"
			if !x.CaughtUp {
				state = "NOT caught up"
			}
			fmt.Fprintf(w, "%s: query index max lag %d entries (%.2f s of ingest), %d at end of load, %s %.2f s later; %s rows/s",
				s.Name, x.MaxLag, x.MaxLagSec, x.EndLag, state, x.DrainSec, num(x.RowsPerSec))
			if x.RebuildRows > 0 {
				fmt.Fprintf(w, "; full rebuild afterwards %s rows/s", num(x.RebuildRowsPerSec))
			}
			fmt.Fprintln(w)
		}
	}
	if d := r.Disk; d != nil {
		mb := func(b int64) float64 { return float64(b) / (1 << 20) }
		fmt.Fprintf(w, "\nbytes on disk for %d events (%.1f MiB of client JSON): segments %.1f MiB (%.2f×), projections %.1f MiB, checkpoints %.2f MiB → log %.2f×; query index %.1f MiB → all %.2f× (budget ≤ %.1f×)\n",
			d.Events, mb(d.ClientJSON), mb(d.Segments), d.SegmentsRatio, mb(d.Projections), mb(d.Checkpoints), d.LogRatio, mb(d.Index), d.WithIndex, Budget.DiskRatio)
	}
	if p := r.Proofs; p != nil {
		fmt.Fprintf(w, "\nproofs at %d leaves (log grown at %s small events/s): in-process inclusion p50 %.1f µs p99 %.1f µs; consistency p50 %.1f µs p99 %.1f µs (budget p99 ≤ %.0f µs)\n",
			p.Leaves, num(p.BuildPerSec), p.Inclusion.P50*1e3, p.Inclusion.P99*1e3, p.Consistency.P50*1e3, p.Consistency.P99*1e3, Budget.ProofP99us)
		if p.HTTPInclusion != nil {
			fmt.Fprintf(w, "proofs over HTTP (one request at a time): inclusion p50 %.2f ms p99 %.2f ms; consistency p50 %.2f ms p99 %.2f ms\n",
				p.HTTPInclusion.P50, p.HTTPInclusion.P99, p.HTTPConsistency.P50, p.HTTPConsistency.P99)
		}
	}
}

func runsOf[T any](runs []T, key func(T) float64) string {
	var parts []string
	for _, r := range runs {
		parts = append(parts, num(key(r)))
	}
	return strings.Join(parts, " ")
}

// num formats a rate with thousands separators.
func num(f float64) string {
	s := fmt.Sprintf("%.0f", f)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[0] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
