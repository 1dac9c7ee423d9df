// Command basalt is Basalt's one binary: basalt pd, basalt store,
// basalt playground, basalt ctl.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "basalt",
		Short:         "Basalt: a sharded, etcd-compatible metadata store",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(pdCmd(), storeCmd(), playgroundCmd(), ctlCmd(), versionCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "basalt:", err)
		os.Exit(1)
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "basalt", version)
		},
	}
}

const version = "0.1.0"
