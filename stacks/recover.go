package stacks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optrefresh"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// A rack up killed in the middle (Ctrl-C twice, SIGKILL, a power cut)
// leaves three things behind, which the next run clears before it starts:
// the Pulumi lock of the stack (file backends), operations the state
// records as pending, and a Helm release left pending-install or
// pending-upgrade, which Helm refuses to touch again ("another operation
// is in progress").

// lockInfo is what the Pulumi file backend writes in a stack lock.
type lockInfo struct {
	Pid       int       `json:"pid"`
	Username  string    `json:"username"`
	Hostname  string    `json:"hostname"`
	Timestamp time.Time `json:"timestamp"`
}

// LockedError says another Pulumi process holds the stack.
type LockedError struct {
	Stack, File string
	Lock        lockInfo
	// Here is true when the holder runs on this machine (and is alive).
	Here bool
}

func (e *LockedError) Error() string {
	who := fmt.Sprintf("pulumi (pid %d, %s@%s) since %s", e.Lock.Pid, e.Lock.Username, e.Lock.Hostname, e.Lock.Timestamp.Format(time.RFC3339))
	if e.Here {
		return fmt.Sprintf("stack %s is being updated by %s: another rack up is working on this cluster; wait for it to finish", e.Stack, who)
	}
	return fmt.Sprintf("stack %s is locked by %s: if no rack up runs on %s any more, delete %s and run rack up again", e.Stack, who, e.Lock.Hostname, e.File)
}

// clearStaleLocks removes the locks of stack in a file:// backend that
// were left by a pulumi process of this machine that no longer runs, and
// fails on a live one. Other backends keep their own locks.
func clearStaleLocks(backend, project, stack string, w io.Writer) error {
	dir, ok := fileBackendDir(backend)
	if !ok {
		return nil
	}
	root := filepath.Join(dir, ".pulumi", "locks")
	host, _ := os.Hostname()
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		// .pulumi/locks/organization/<project>/<stack>/<id>.json
		if d.IsDir() || filepath.Ext(path) != ".json" || filepath.Base(filepath.Dir(path)) != stack ||
			filepath.Base(filepath.Dir(filepath.Dir(path))) != project {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var l lockInfo
		if err := json.Unmarshal(b, &l); err != nil {
			return fmt.Errorf("stack %s: lock %s: %w", stack, path, err)
		}
		if l.Hostname != host {
			return &LockedError{Stack: stack, File: path, Lock: l}
		}
		if pulumiAlive(l.Pid) {
			return &LockedError{Stack: stack, File: path, Lock: l, Here: true}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		fmt.Fprintf(w, "rack: removed the lock of stack %s left by pulumi (pid %d, since %s), which no longer runs: an earlier rack up was interrupted\n",
			stack, l.Pid, l.Timestamp.Format(time.RFC3339))
		return nil
	})
}

// pulumiAlive reports whether pid is a running pulumi process (a pid the
// system gave to another program since counts as gone).
func pulumiAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist) // no /proc: trust kill(0)
	}
	return strings.Contains(string(cmdline), "pulumi")
}

// recoverInterrupted finishes what an interrupted run left pending: a Helm
// release whose install was cut off loses its pending record (the next
// install adopts the objects it had created, which carry the release's
// ownership labels); an upgrade cut off falls back to the last deployed
// revision; pending creates are cleared from the state (Kubernetes
// objects are created again by server-side apply, which adopts existing
// ones). Pending updates and deletes are cleared by the refresh every
// run starts with.
func recoverInterrupted(ctx context.Context, st auto.Stack, d *apitype.DeploymentV3, cs kubernetes.Interface, opts Options) error {
	if len(d.PendingOperations) == 0 {
		return nil
	}
	w := progress(opts)
	creates := false
	for _, op := range d.PendingOperations {
		res := op.Resource
		fmt.Fprintf(w, "rack: an earlier run was interrupted while %s %s\n", op.Type, res.URN)
		if op.Type == apitype.OperationTypeCreating {
			creates = true
		}
		if res.Type != "kubernetes:helm.sh/v3:Release" || cs == nil {
			continue
		}
		name, _ := res.Inputs["name"].(string)
		ns, _ := res.Inputs["namespace"].(string)
		if name == "" || ns == "" {
			continue
		}
		revs, err := helmReleases(ctx, cs, ns, name)
		if err != nil {
			return err
		}
		for _, r := range revs {
			// A cut-off install is dropped whatever Helm got to record;
			// a cut-off upgrade only loses its own pending revision.
			if op.Type != apitype.OperationTypeCreating && !(r == revs[len(revs)-1] && r.pending()) {
				continue
			}
			err := cs.CoreV1().Secrets(ns).Delete(ctx, r.Secret, metav1.DeleteOptions{})
			if err != nil && !isNotFound(err) {
				return fmt.Errorf("the Helm release %s/%s: remove the record of revision %d (%s) left by the interrupted run: %w", ns, name, r.Revision, r.Status, err)
			}
			fmt.Fprintf(w, "rack: Helm release %s/%s: removed revision %d (%s) left by the interrupted run\n", ns, name, r.Revision, r.Status)
		}
	}
	if !creates {
		return nil
	}
	// Only the creates need clearing: the engine keeps them until told.
	_, err := st.Refresh(ctx, optrefresh.ClearPendingCreates(), optrefresh.ProgressStreams(w), optrefresh.ErrorProgressStreams(w))
	if err != nil {
		return explain(fmt.Errorf("pulumi refresh --clear-pending-creates of stack %s: %w", st.Name(), err), opts)
	}
	return nil
}
