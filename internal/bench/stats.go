package bench

import (
	"slices"
	"sort"
	"syscall"
	"time"
)

// Latency summarises a set of durations, in milliseconds.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// Summarize sorts ds and returns its percentiles.
func Summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return Latency{N: len(ds), P50: ms(quantile(ds, 0.50)), P99: ms(quantile(ds, 0.99)), Max: ms(ds[len(ds)-1])}
}

// quantile is the nearest-rank quantile of sorted ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// cpuTimes is the process's user and system CPU time so far.
func cpuTimes() (user, sys time.Duration) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// CPUTime is the process's user plus system CPU time so far (getrusage). Benchmarks report CPU per op from it,
// which, unlike ns/op, does not count time spent waiting for a core on a shared machine.
func CPUTime() time.Duration {
	u, s := cpuTimes()
	return u + s
}

// CPU is CPU time spent per event, in microseconds.
type CPU struct {
	UserUs  float64 `json:"user_us"`
	SysUs   float64 `json:"sys_us"`
	TotalUs float64 `json:"total_us"`
}

func cpuPer(user, sys time.Duration, events int64) CPU {
	if events == 0 {
		return CPU{}
	}
	u := float64(user) / 1e3 / float64(events)
	s := float64(sys) / 1e3 / float64(events)
	return CPU{UserUs: u, SysUs: s, TotalUs: u + s}
}

// cpuMeter measures the process's CPU time over an interval.
type cpuMeter struct{ u0, s0 time.Duration }

func startCPU() cpuMeter {
	u, s := cpuTimes()
	return cpuMeter{u, s}
}

func (m cpuMeter) per(events int64) CPU {
	u, s := cpuTimes()
	return cpuPer(u-m.u0, s-m.s0, events)
}

// Median returns the element of xs whose key is the median (the lower middle for an even count).
func Median[T any](xs []T, key func(T) float64) T {
	s := slices.Clone(xs)
	sort.SliceStable(s, func(i, j int) bool { return key(s[i]) < key(s[j]) })
	return s[(len(s)-1)/2]
}
