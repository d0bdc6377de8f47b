package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/homelab/rack/inventory"
)

// Exit codes (SPEC.md): 0 success, 1 the command ran and something failed, 2 bad usage.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
	envPrefix  = "RACK"
	outputText = "text"
	outputJSON = "json"
)

// globals are the global flags, resolved once per invocation and passed down;
// nothing lives in package variables.
type globals struct {
	inventory string
	output    string
	verbose   bool
	yes       bool
	stdout    io.Writer
	stderr    io.Writer
}

// failure marks an error from a command that ran (exit 1); every other error
// cobra returns (flags, arguments, unknown commands) is bad usage (exit 2).
type failure struct{ error }

// silentFailure is a failure whose details the command has already printed.
var errSilent = errors.New("")

func fail(err error) error {
	if err == nil {
		return nil
	}
	return failure{err}
}

func run(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRootCmd(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	// Ctrl-C or SIGTERM cancels every command's context (cmd.Context()), so
	// work stops cleanly and the next run finishes it; a second one stops
	// rack at once (the default action is back).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var f failure
	if errors.As(err, &f) {
		if f.error != errSilent {
			fmt.Fprintln(stderr, "rack:", f.error)
		}
		return exitFailed
	}
	fmt.Fprintf(stderr, "rack: %v\nRun 'rack --help' for usage.\n", err)
	return exitUsage
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "rack",
		Short: "Provision and run a homelab k3s cluster from one inventory file",
		Long: `rack installs k3s over SSH on a shelf of Raspberry Pis and x86 boxes, layers the
platform on top (MetalLB, Longhorn, local volumes, ArgoCD, apps) and carries the
cluster through day 2, all from one inventory file.

Every flag can also be set in the environment as RACK_<FLAG>, for example
RACK_INVENTORY=lab.yaml or RACK_OUTPUT=json.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Runs before every subcommand: environment first, then validate globals.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := flagsFromEnv(cmd); err != nil {
				return err
			}
			if g.output != outputText && g.output != outputJSON {
				return fmt.Errorf("-o/--output %q: use text or json", g.output)
			}
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&g.inventory, "inventory", "i", inventory.DefaultPath, "inventory file (env RACK_INVENTORY)")
	pf.StringVarP(&g.output, "output", "o", outputText, "output format: text or json (env RACK_OUTPUT)")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "verbose output (env RACK_VERBOSE)")
	pf.BoolVar(&g.yes, "yes", false, "do not ask for confirmation (env RACK_YES)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })

	root.AddCommand(newVersionCmd(g), newInventoryCmd(g), newPlanCmd(g), newUpCmd(g), newStatusCmd(g), newVersionsCmd(g), newUpgradeCmd(g), newNodeCmd(g), newAppCmd(g), newRenderCmd(g))
	root.AddCommand(newBackupCmd(g), newRebuildCmd(g))
	return root
}

// flagsFromEnv gives every flag of cmd (its own and inherited) a value from
// RACK_<FLAG> when the flag was not set on the command line. The flag stays the
// one source of truth, typed and validated by pflag.
func flagsFromEnv(cmd *cobra.Command) error {
	v := viper.New()
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		env := envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if err := v.BindEnv(f.Name, env); err != nil {
			errs = append(errs, err)
			return
		}
		if f.Changed || !v.IsSet(f.Name) {
			return
		}
		if err := cmd.Flags().Set(f.Name, v.GetString(f.Name)); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %v", env, v.GetString(f.Name), err))
		}
	})
	return errors.Join(errs...)
}

// usageArgs wraps a cobra argument check; its errors stay usage errors (exit 2).
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("expected %s, got %d argument(s)", what, len(args))
		}
		return nil
	}
}
