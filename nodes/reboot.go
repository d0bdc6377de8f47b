package nodes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/homelab/rack/internal/sleep"
)

// bootIDCmd prints the kernel's boot id, new on every boot.
var bootIDCmd = Sh(`cat /proc/sys/kernel/random/boot_id`)

// rebootCmd reboots detached and a second later, so the command returns
// before the connection drops.
var rebootCmd = Sh(`nohup sh -c 'sleep 1; if [ -d /run/systemd/system ]; then systemctl reboot; else reboot; fi' >/dev/null 2>&1 &`)

// Reboot restarts the node and waits until it is back: a new boot id proves
// the machine really went down, not just that sshd answered in between.
func (h *Host) Reboot(ctx context.Context, timeout time.Duration) error {
	before, err := h.Output(ctx, bootIDCmd, RunOptions{Quiet: true})
	if err != nil {
		return err
	}
	h.Step("rebooting")
	if err := h.Run(ctx, rebootCmd, RunOptions{Privileged: true, Quiet: true}); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if err := sleep.For(ctx, 2*time.Second); err != nil {
			return err
		}
		out, err := h.Output(ctx, bootIDCmd, RunOptions{Quiet: true})
		if err == nil && !bytes.Equal(bytes.TrimSpace(out), bytes.TrimSpace(before)) {
			h.Step("back from reboot")
			return nil
		}
		last = err
	}
	if last == nil {
		last = errors.New("it still runs the same boot")
	}
	return fmt.Errorf("did not come back from its reboot within %s (last: %v): check the node's console", timeout, last)
}
