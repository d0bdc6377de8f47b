package k3s

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// SQLite's own format, for the one case rack must merge a database with its
// write-ahead log itself: a single server without the sqlite3 CLI, whose
// state.db rack copies while k3s is stopped. k3s (kine) runs SQLite in WAL
// mode, and a stopped k3s may leave committed transactions in state.db-wal;
// copying state.db alone would lose them. CheckpointWAL does what SQLite's
// checkpoint does: it writes every page of the log's last committed
// transaction (and those before it) into the database image. Frames are
// taken only while their salts and cumulative checksums are valid, exactly
// as SQLite decides which frames a log holds (https://sqlite.org/fileformat2.html,
// "The Write-Ahead Log").

const (
	walHeaderSize      = 32
	walFrameHeaderSize = 24
	walMagicLE         = 0x377f0682
	walMagicBE         = 0x377f0683
	sqliteHeader       = "SQLite format 3\x00"
)

// CheckpointWAL returns db with the committed frames of wal applied. An
// empty or absent log (nil) returns db unchanged; a log that is not a
// SQLite WAL is an error.
func CheckpointWAL(db, wal []byte) ([]byte, error) {
	if len(db) < 100 || !bytes.HasPrefix(db, []byte(sqliteHeader)) {
		return nil, errors.New("not a SQLite database (bad header)")
	}
	if len(wal) < walHeaderSize {
		return db, nil // no log, or one that was never written to
	}
	magic := binary.BigEndian.Uint32(wal[0:4])
	var order binary.ByteOrder
	switch magic {
	case walMagicLE:
		order = binary.LittleEndian
	case walMagicBE:
		order = binary.BigEndian
	default:
		return nil, fmt.Errorf("not a SQLite write-ahead log (magic %#x)", magic)
	}
	pageSize := int(binary.BigEndian.Uint32(wal[8:12]))
	if pageSize < 512 || pageSize > 65536 || pageSize&(pageSize-1) != 0 {
		return nil, fmt.Errorf("write-ahead log: invalid page size %d", pageSize)
	}
	salt1, salt2 := binary.BigEndian.Uint32(wal[16:20]), binary.BigEndian.Uint32(wal[20:24])
	s0, s1 := walChecksum(order, wal[0:24], 0, 0)
	if s0 != binary.BigEndian.Uint32(wal[24:28]) || s1 != binary.BigEndian.Uint32(wal[28:32]) {
		return db, nil // a header that does not check out: SQLite ignores the whole log
	}
	type frame struct {
		pgno uint32
		data []byte
	}
	var pending, committed []frame
	var dbPages uint32
	for off := walHeaderSize; off+walFrameHeaderSize+pageSize <= len(wal); off += walFrameHeaderSize + pageSize {
		h := wal[off : off+walFrameHeaderSize]
		data := wal[off+walFrameHeaderSize : off+walFrameHeaderSize+pageSize]
		if binary.BigEndian.Uint32(h[8:12]) != salt1 || binary.BigEndian.Uint32(h[12:16]) != salt2 {
			break // a frame of an earlier generation of the log
		}
		s0, s1 = walChecksum(order, h[0:8], s0, s1)
		s0, s1 = walChecksum(order, data, s0, s1)
		if s0 != binary.BigEndian.Uint32(h[16:20]) || s1 != binary.BigEndian.Uint32(h[20:24]) {
			break // torn or stale: the log ends before it
		}
		pgno := binary.BigEndian.Uint32(h[0:4])
		if pgno == 0 {
			return nil, errors.New("write-ahead log: frame for page 0")
		}
		pending = append(pending, frame{pgno, data})
		if size := binary.BigEndian.Uint32(h[4:8]); size != 0 {
			// A commit frame: everything up to here is one transaction.
			committed = append(committed, pending...)
			pending = nil
			dbPages = size
		}
	}
	if len(committed) == 0 {
		return db, nil
	}
	if dbPageSize := sqlitePageSize(db); dbPageSize != pageSize {
		return nil, fmt.Errorf("write-ahead log page size %d differs from the database's %d", pageSize, dbPageSize)
	}
	out := make([]byte, int(dbPages)*pageSize)
	copy(out, db)
	for _, f := range committed {
		if f.pgno > dbPages {
			continue // a page the last commit truncated away
		}
		copy(out[int(f.pgno-1)*pageSize:], f.data)
	}
	return out, nil
}

// walChecksum continues SQLite's WAL checksum over b (a multiple of 8 bytes).
func walChecksum(order binary.ByteOrder, b []byte, s0, s1 uint32) (uint32, uint32) {
	for i := 0; i+8 <= len(b); i += 8 {
		s0 += order.Uint32(b[i:]) + s1
		s1 += order.Uint32(b[i+4:]) + s0
	}
	return s0, s1
}

// sqlitePageSize reads the database header's page size (1 means 65536).
func sqlitePageSize(db []byte) int {
	v := int(binary.BigEndian.Uint16(db[16:18]))
	if v == 1 {
		return 65536
	}
	return v
}
