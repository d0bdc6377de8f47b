package nodes

import (
	"context"
	"fmt"
)

// Step is one named piece of work on a node, with the reason for it. Plans are
// lists of steps: `rack plan` prints Name and Why, and the executor runs Do of
// the very same values, so what is shown and what is done cannot drift.
type Step struct {
	Name string `json:"name"`
	Why  string `json:"why,omitempty"`
	// Do carries the step out on the node. It is nil for a step that only
	// reports (a refusal, an unreachable node).
	Do func(ctx context.Context, h *Host) error `json:"-"`
}

// RunSteps runs steps in order on h, naming each in the progress display,
// and stops at the first failure, which names the step.
func RunSteps(ctx context.Context, h *Host, steps []Step) error {
	for _, s := range steps {
		if s.Do == nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		h.Step(s.Name)
		if err := s.Do(ctx, h); err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return nil
}

// StepNames lists the names, for messages and tests.
func StepNames(steps []Step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.Name
	}
	return out
}
