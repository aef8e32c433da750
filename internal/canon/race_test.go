//go:build race

package canon

// raceEnabled is set because sync.Pool drops items at random under the race
// detector, so allocation counts are meaningless there.
const raceEnabled = true
