package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// checkServerArgs fails unless args is a server command of this binary
// followed by flags it has: a manifest that names a renamed or misspelt
// flag would only fail when a cluster starts from it.
func checkServerArgs(t *testing.T, where string, args []string) {
	t.Helper()
	if len(args) == 0 {
		t.Fatalf("%s: no command", where)
	}
	var cmd *cobra.Command
	switch args[0] {
	case "pd":
		cmd = pdCmd()
	case "store":
		cmd = storeCmd()
	default:
		t.Fatalf("%s: %q is not a server command", where, args[0])
	}
	// Kubernetes expands $(VAR) before the process sees it.
	var expanded []string
	for _, a := range args[1:] {
		expanded = append(expanded, strings.NewReplacer("$(POD_NAME)", "pod-0", "$(NODE_NAME)", "node-0").Replace(a))
	}
	if err := cmd.ParseFlags(expanded); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if rest := cmd.Flags().Args(); len(rest) > 0 {
		t.Fatalf("%s: arguments %v are not flags", where, rest)
	}
}

// The Kubernetes manifests hold what the issue names (StatefulSets,
// headless Services, PodDisruptionBudgets for PD and stores), and every
// container's arguments are flags the binary has.
func TestKubernetesManifests(t *testing.T) {
	kinds := map[string]int{}
	for _, name := range []string{"pd.yaml", "store.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "k8s", name))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc struct {
				Kind string
				Spec struct {
					ClusterIP string `yaml:"clusterIP"`
					Template  struct {
						Spec struct {
							Containers []struct {
								Name string
								Args []string
							}
						}
					}
				}
			}
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			kind := doc.Kind
			if kind == "Service" && doc.Spec.ClusterIP == "None" {
				kind = "headless Service"
			}
			kinds[kind]++
			for _, c := range doc.Spec.Template.Spec.Containers {
				checkServerArgs(t, name+" container "+c.Name, c.Args)
			}
		}
	}
	for kind, n := range map[string]int{"StatefulSet": 2, "headless Service": 2, "PodDisruptionBudget": 2} {
		if kinds[kind] < n {
			t.Errorf("the manifests hold %d %s, want %d (one for PD, one for the stores): %v", kinds[kind], kind, n, kinds)
		}
	}
}

// The compose file runs three PD members and three stores, with flags the
// binary has.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Command []string
		}
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for name, s := range f.Services {
		checkServerArgs(t, "service "+name, s.Command)
		count[s.Command[0]]++
	}
	if count["pd"] != 3 || count["store"] != 3 {
		t.Fatalf("the compose file runs %v, want 3 pd and 3 store", count)
	}
}
