package local

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/cairn-ai/cairn/internal/store"
)

// Segment format. A segment file is a sequence of frames; a frame is one appended batch:
//
//	header (32 bytes): magic "CRN1" | count u32 | first index u64 | body length u32 | body CRC-32C u32 |
//	                   reserved u32 | header CRC-32C u32 (of the 28 bytes before it)
//	body: count records
//
// A record (all integers big-endian):
//
//	marker u8 (0x80 | 1 if an envelope follows | 2 if a sealed payload follows) | type length u8 | type |
//	id [16] | recorded i64 | digest [32] | salt [16] | content key [16] |
//	envelope length u32 | envelope | sealed length u32 | sealed
//
// A record's marker byte always has the high bit set and a header always starts with 'C' (0x43), so a
// sequential reader can tell where a frame ends.
const (
	frameMagic     = "CRN1"
	headerSize     = 32
	recordFixed    = 1 + 1 + 16 + 8 + 32 + 16 + 16 + 4 + 4
	markerBit      = 0x80
	flagEnvelope   = 1
	flagSealed     = 2
	maxRecordBytes = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func appendFrame(dst []byte, first uint64, entries []store.Entry) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, headerSize)...)
	for i := range entries {
		dst = appendRecord(dst, &entries[i])
	}
	body := dst[start+headerSize:]
	h := dst[start : start+headerSize]
	copy(h, frameMagic)
	binary.BigEndian.PutUint32(h[4:], uint32(len(entries)))
	binary.BigEndian.PutUint64(h[8:], first)
	binary.BigEndian.PutUint32(h[16:], uint32(len(body)))
	binary.BigEndian.PutUint32(h[20:], crc32.Checksum(body, castagnoli))
	binary.BigEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
	return dst
}

func recordSize(e *store.Entry) int {
	return recordFixed + len(e.Type) + len(e.Envelope) + len(e.Sealed)
}

func appendRecord(dst []byte, e *store.Entry) []byte {
	m := byte(markerBit)
	if e.Envelope != nil {
		m |= flagEnvelope
	}
	if e.Sealed != nil {
		m |= flagSealed
	}
	dst = append(dst, m, byte(len(e.Type)))
	dst = append(dst, e.Type...)
	dst = append(dst, e.ID[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Recorded))
	dst = append(dst, e.Digest[:]...)
	dst = append(dst, e.Salt[:]...)
	dst = append(dst, e.ContentKey[:]...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(e.Envelope)))
	dst = append(dst, e.Envelope...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(e.Sealed)))
	return append(dst, e.Sealed...)
}

type frameHeader struct {
	count   uint32
	first   uint64
	bodyLen uint32
	bodyCRC uint32
}

var errBadHeader = errors.New("bad frame header")

func parseHeader(h []byte) (frameHeader, error) {
	if len(h) < headerSize || string(h[:4]) != frameMagic ||
		binary.BigEndian.Uint32(h[28:]) != crc32.Checksum(h[:28], castagnoli) {
		return frameHeader{}, errBadHeader
	}
	return frameHeader{
		count:   binary.BigEndian.Uint32(h[4:]),
		first:   binary.BigEndian.Uint64(h[8:]),
		bodyLen: binary.BigEndian.Uint32(h[16:]),
		bodyCRC: binary.BigEndian.Uint32(h[20:]),
	}, nil
}

// parseRecord parses the record at the start of b into e (which then aliases b) and returns its length.
func parseRecord(b []byte, e *store.Entry) (int, error) {
	if len(b) < recordFixed {
		return 0, errors.New("record truncated")
	}
	m := b[0]
	if m&markerBit == 0 {
		return 0, errors.New("not a record")
	}
	tl := int(b[1])
	p := 2
	if len(b) < recordFixed+tl {
		return 0, errors.New("record truncated")
	}
	e.Type = string(b[p : p+tl])
	p += tl
	copy(e.ID[:], b[p:])
	p += 16
	e.Recorded = int64(binary.BigEndian.Uint64(b[p:]))
	p += 8
	copy(e.Digest[:], b[p:])
	p += 32
	copy(e.Salt[:], b[p:])
	p += 16
	copy(e.ContentKey[:], b[p:])
	p += 16
	n := int(binary.BigEndian.Uint32(b[p:]))
	p += 4
	if n > len(b)-p-4 {
		return 0, errors.New("record truncated")
	}
	e.Envelope = nil
	if m&flagEnvelope != 0 {
		e.Envelope = b[p : p+n : p+n]
	}
	p += n
	n = int(binary.BigEndian.Uint32(b[p:]))
	p += 4
	if n > len(b)-p {
		return 0, errors.New("record truncated")
	}
	e.Sealed = nil
	if m&flagSealed != 0 {
		e.Sealed = b[p : p+n : p+n]
	}
	p += n
	return p, nil
}

// recordLen reads a record's total length from its first bytes (which must hold at least the fixed part up to
// the envelope length, plus the sealed length once known); used to size reads.
func recordPrefixLen(b []byte) (envOff int, err error) {
	if len(b) < 2 || b[0]&markerBit == 0 {
		return 0, fmt.Errorf("not a record")
	}
	return 2 + int(b[1]) + 16 + 8 + 32 + 16 + 16, nil
}
