package ledger

import (
	"fmt"
	"strconv"
	"strings"
)

// TilePath formats the C2SP tlog-tiles path of a tile (level L, or "entries" when entries is set), index N and
// width W (W < 256 adds the ".p/W" partial suffix), without the "tile/" prefix: e.g. "0/x001/x234/067.p/8".
func TilePath(level int, entries bool, n int64, w int) string {
	var b strings.Builder
	if entries {
		b.WriteString("entries/")
	} else {
		b.WriteString(strconv.Itoa(level))
		b.WriteByte('/')
	}
	s := fmt.Sprintf("%03d", n%1000)
	for n >= 1000 {
		n /= 1000
		s = fmt.Sprintf("x%03d/", n%1000) + s
	}
	b.WriteString(s)
	if w < 256 {
		fmt.Fprintf(&b, ".p/%d", w)
	}
	return b.String()
}

// ParseTilePath parses a path as TilePath formats it and rejects every other spelling, so one tile has one URL.
func ParseTilePath(p string) (level int, entries bool, n int64, w int, err error) {
	bad := fmt.Errorf("malformed tile path")
	first, rest, ok := strings.Cut(p, "/")
	if !ok {
		return 0, false, 0, 0, bad
	}
	if first == "entries" {
		entries = true
	} else {
		level, err = strconv.Atoi(first)
		if err != nil || level < 0 || level > 63 || strconv.Itoa(level) != first {
			return 0, false, 0, 0, bad
		}
	}
	w = 256
	if i := strings.Index(rest, ".p/"); i >= 0 {
		w, err = strconv.Atoi(rest[i+3:])
		if err != nil || w < 1 || w > 255 || strconv.Itoa(w) != rest[i+3:] {
			return 0, false, 0, 0, bad
		}
		rest = rest[:i]
	}
	parts := strings.Split(rest, "/")
	for i, part := range parts {
		last := i == len(parts)-1
		if !last {
			if len(part) != 4 || part[0] != 'x' {
				return 0, false, 0, 0, bad
			}
			part = part[1:]
		} else if len(part) != 3 {
			return 0, false, 0, 0, bad
		}
		d, err := strconv.Atoi(part)
		if err != nil || d < 0 {
			return 0, false, 0, 0, bad
		}
		if n > (1<<62)/1000 {
			return 0, false, 0, 0, bad
		}
		n = n*1000 + int64(d)
	}
	if TilePath(level, entries, n, w) != p {
		return 0, false, 0, 0, bad
	}
	return level, entries, n, w, nil
}

// ParseEntryBundle splits a C2SP tlog-tiles entry bundle into its entries (each a big-endian uint16 length and
// that many bytes). It rejects a truncated bundle.
func ParseEntryBundle(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, fmt.Errorf("entry bundle truncated")
		}
		l := int(b[0])<<8 | int(b[1])
		if len(b) < 2+l {
			return nil, fmt.Errorf("entry bundle truncated")
		}
		out = append(out, b[2:2+l:2+l])
		b = b[2+l:]
	}
	return out, nil
}

// AppendEntry appends one entry to a bundle. Entries over 65,535 bytes cannot be bundled.
func AppendEntry(bundle, entry []byte) ([]byte, error) {
	if len(entry) > 0xffff {
		return nil, fmt.Errorf("entry of %d bytes is over the 65,535-byte bundle limit", len(entry))
	}
	bundle = append(bundle, byte(len(entry)>>8), byte(len(entry)))
	return append(bundle, entry...), nil
}
