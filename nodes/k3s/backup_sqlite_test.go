package k3s

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homelab/rack/internal/testenv"
)

// TestCheckpointWAL: a database whose last transactions are only in its
// write-ahead log (its writer was killed, as a stopped k3s may leave it)
// is merged into one file that SQLite itself reads whole and intact.
func TestCheckpointWAL(t *testing.T) {
	sqlite3, err := exec.LookPath("sqlite3")
	if err != nil {
		testenv.SkipOrFail(t, "sqlite3 is not installed (make deps installs it)")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "state.db")
	// The writer keeps the log (no automatic checkpoint) and is killed
	// before it can checkpoint on close.
	cmd := exec.Command(sqlite3, db)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	script := `PRAGMA journal_mode=WAL;
PRAGMA wal_autocheckpoint=0;
CREATE TABLE kine (id INTEGER PRIMARY KEY, name TEXT, value BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 500) INSERT INTO kine (name, value) SELECT '/registry/x/' || i, randomblob(300) FROM n;
DELETE FROM kine WHERE id % 7 = 0;
UPDATE kine SET name = name || '-v2' WHERE id % 5 = 0;
SELECT 'written';
`
	if _, err := stdin.Write([]byte(script)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200 && !strings.Contains(out.String(), "written"); i++ {
		exec.Command("sleep", "0.05").Run()
	}
	// What the writer sees, before it dies.
	want, err := exec.Command(sqlite3, db, "SELECT count(*), sum(length(name)), sum(length(value)) FROM kine").Output()
	if err != nil {
		t.Fatal(err)
	}
	// Copies taken while the writer is alive: the log holds the data.
	dbCopy, _ := os.ReadFile(db)
	walCopy, _ := os.ReadFile(db + "-wal")
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if len(walCopy) == 0 {
		t.Fatal("the test made no write-ahead log")
	}
	merged, err := CheckpointWAL(dbCopy, walCopy)
	if err != nil {
		t.Fatal(err)
	}
	out2 := filepath.Join(t.TempDir(), "merged.db")
	if err := os.WriteFile(out2, merged, 0o600); err != nil {
		t.Fatal(err)
	}
	check, err := exec.Command(sqlite3, out2, "PRAGMA integrity_check").CombinedOutput()
	if err != nil || strings.TrimSpace(string(check)) != "ok" {
		t.Fatalf("integrity check of the merged database: %s %v", check, err)
	}
	got, err := exec.Command(sqlite3, out2, "SELECT count(*), sum(length(name)), sum(length(value)) FROM kine").Output()
	if err != nil || string(got) != string(want) {
		t.Fatalf("merged database has %q (%v), the writer saw %q", got, err, want)
	}
	// The database alone lacks them: the merge is what saves them.
	alone := filepath.Join(t.TempDir(), "alone.db")
	_ = os.WriteFile(alone, dbCopy, 0o600)
	if a, _ := exec.Command(sqlite3, alone, "SELECT count(*), sum(length(name)), sum(length(value)) FROM kine").CombinedOutput(); string(a) == string(want) {
		t.Errorf("the main file alone already held every row (%s): the test proves nothing", a)
	}
	// A log that is not one is refused; no log leaves the database as is.
	if _, err := CheckpointWAL(dbCopy, bytes.Repeat([]byte{7}, 64)); err == nil {
		t.Error("a garbage log was accepted")
	}
	if same, err := CheckpointWAL(dbCopy, nil); err != nil || !bytes.Equal(same, dbCopy) {
		t.Errorf("no log: %v", err)
	}
}
