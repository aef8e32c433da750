package event

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"time"
)

// UUID is an event id: a UUIDv7, so ids sort by the time they were made and an id names its own age.
type UUID [16]byte

var errBadUUID = errors.New("not a UUID in canonical 8-4-4-4-12 lowercase hex form")

// ParseUUID parses the canonical text form of a UUID (lowercase or uppercase hex, with hyphens).
func ParseUUID(s string) (UUID, error) {
	var u UUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, errBadUUID
	}
	var buf [32]byte
	copy(buf[0:8], s[0:8])
	copy(buf[8:12], s[9:13])
	copy(buf[12:16], s[14:18])
	copy(buf[16:20], s[19:23])
	copy(buf[20:32], s[24:36])
	if _, err := hex.Decode(u[:], buf[:]); err != nil {
		return u, errBadUUID
	}
	return u, nil
}

// Version is the UUID's version nibble.
func (u UUID) Version() int { return int(u[6] >> 4) }

// Time is the millisecond timestamp a UUIDv7 carries.
func (u UUID) Time() time.Time {
	ms := int64(binary.BigEndian.Uint64(append([]byte{0, 0}, u[:6]...)))
	return time.UnixMilli(ms)
}

// String returns the canonical lowercase 8-4-4-4-12 form.
func (u UUID) String() string {
	var b [36]byte
	u.appendTo(b[:0])
	return string(b[:])
}

// AppendText appends the canonical form to dst.
func (u UUID) AppendText(dst []byte) []byte { return u.appendTo(dst) }

func (u UUID) appendTo(dst []byte) []byte {
	dst = hex.AppendEncode(dst, u[0:4])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, u[4:6])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, u[6:8])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, u[8:10])
	dst = append(dst, '-')
	return hex.AppendEncode(dst, u[10:16])
}

// NewV7 returns a new random UUIDv7 for time t.
func NewV7(t time.Time) UUID {
	var u UUID
	rand.Read(u[6:])
	ms := uint64(t.UnixMilli())
	u[0], u[1], u[2], u[3], u[4], u[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	u[6] = u[6]&0x0f | 0x70
	u[8] = u[8]&0x3f | 0x80
	return u
}
