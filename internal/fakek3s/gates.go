package fakek3s

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/homelab/rack/nodes"
)

// Gates hold an init verb at the moment a test wants to cut rack off: the
// fake systemctl waits while InitStateDir/gate-<verb>[-<unit>] exists (see
// its waitGate), and records its pid in <gate>.held.

func gatePath(verb, unit string) string {
	if unit == "" {
		return InitStateDir + "/gate-" + verb
	}
	return InitStateDir + "/gate-" + verb + "-" + unitName(unit)
}

// CloseGate makes `systemctl VERB [UNIT]` on the host wait at the gate.
func CloseGate(ctx context.Context, h Host, verb, unit string) error {
	g := gatePath(verb, unit)
	_, err := h.Exec(ctx, "mkdir -p "+nodes.Quote(InitStateDir)+" && rm -f "+nodes.Quote(g+".held")+" && touch "+nodes.Quote(g))
	return err
}

// WaitAtGate waits until a `systemctl VERB [UNIT]` is held at the gate and
// returns its pid.
func WaitAtGate(ctx context.Context, h Host, verb, unit string) (int, error) {
	g := gatePath(verb, unit) + ".held"
	for {
		b, err := readHostFile(ctx, h, g)
		if err != nil {
			return 0, err
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return pid, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for systemctl %s %s to reach its gate: %w", verb, unit, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// KillAtGate kills the command held at the gate (it never does its work,
// as when the link to rack dropped or the power went) and opens the gate.
func KillAtGate(ctx context.Context, h Host, verb, unit string) error {
	g := gatePath(verb, unit)
	_, err := h.Exec(ctx, "p=$(cat "+nodes.Quote(g+".held")+" 2>/dev/null) && kill -9 \"$p\" 2>/dev/null; rm -f "+nodes.Quote(g)+" "+nodes.Quote(g+".held"))
	return err
}
