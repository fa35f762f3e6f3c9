package main

import (
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The deployment examples are what admins copy: they must parse, agree with themselves and
// load as saslgate configurations.

const examples = "../../examples"

// requireTool skips without the tool, unless SASLGATE_E2E=require makes that a failure.
func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("SASLGATE_E2E") == "require" {
			t.Fatalf("%s is required (SASLGATE_E2E=require): %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
}

func TestComposeExample(t *testing.T) {
	dir := filepath.Join(examples, "compose")
	if _, err := loadConfig(filepath.Join(dir, "saslgate.yaml")); err != nil {
		t.Errorf("compose saslgate.yaml: %v", err)
	}

	var compose struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
			Build   any      `yaml:"build"`
		} `yaml:"services"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"saslgate", "dovecot", "postfix", "keycloak"} {
		if _, ok := compose.Services[want]; !ok {
			t.Errorf("no service %s", want)
		}
	}
	// Every file the services mount ships with the example, except what the README has the
	// admin create (keys, certificates).
	for name, s := range compose.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, "./") || src == "./tls" || src == "./secrets" {
				continue
			}
			if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}

	requireTool(t, "docker-compose")
	cmd := exec.Command("docker-compose", "-f", filepath.Join(dir, "docker-compose.yml"), "config", "--quiet")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker-compose config: %v\n%s", err, out)
	}
}

// k8sObject is the part of a manifest these checks read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Selector yaml.Node `yaml:"selector"` // matchLabels (Deployment, PDB) or labels (Service)
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				Containers []struct {
					Ports []struct {
						Name string `yaml:"name"`
					} `yaml:"ports"`
				} `yaml:"containers"`
				Volumes []struct {
					ConfigMap *struct{ Name string } `yaml:"configMap"`
					Secret    *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		Ports []struct {
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

func (o k8sObject) selector() map[string]string {
	var s struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	if o.Kind == "Service" {
		var m map[string]string
		_ = o.Spec.Selector.Decode(&m)
		return m
	}
	_ = o.Spec.Selector.Decode(&s)
	return s.MatchLabels
}

func TestKubernetesExample(t *testing.T) {
	f, err := os.Open(filepath.Join(examples, "kubernetes", "saslgate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	byKind := map[string][]k8sObject{}
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Errorf("object without apiVersion, kind or name: %+v", o)
		}
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}
	wantAPI := map[string]string{"ConfigMap": "v1", "Secret": "v1", "Deployment": "apps/v1", "Service": "v1", "PodDisruptionBudget": "policy/v1"}
	for kind, api := range wantAPI {
		if len(byKind[kind]) == 0 {
			t.Errorf("no %s", kind)
			continue
		}
		for _, o := range byKind[kind] {
			if o.APIVersion != api {
				t.Errorf("%s %s: apiVersion %s, want %s", kind, o.Metadata.Name, o.APIVersion, api)
			}
		}
	}
	if t.Failed() {
		return
	}

	// The ConfigMap holds a configuration saslgate loads.
	cm := byKind["ConfigMap"][0]
	p := filepath.Join(t.TempDir(), "saslgate.yaml")
	if err := os.WriteFile(p, []byte(cm.Data["saslgate.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(p)
	if err != nil {
		t.Fatalf("ConfigMap saslgate.yaml: %v", err)
	}
	// The two replicas share a store the file also runs: its Service selects a Deployment's pods.
	host, _, _ := net.SplitHostPort(cfg.Shared.Address)
	var storeSvc *k8sObject
	for i, s := range byKind["Service"] {
		if s.Metadata.Name == host {
			storeSvc = &byKind["Service"][i]
		}
	}
	if storeSvc == nil {
		t.Errorf("shared.address %q names no Service of the file", cfg.Shared.Address)
	} else if !slices.ContainsFunc(byKind["Deployment"], func(d k8sObject) bool {
		return maps.Equal(d.selector(), storeSvc.selector()) && d.Metadata.Name != "saslgate"
	}) {
		t.Errorf("Service %s selects no store Deployment of the file", host)
	}

	// Selectors, ports and volumes refer to what exists.
	dep := byKind["Deployment"][0]
	labels := dep.Spec.Template.Metadata.Labels
	for _, o := range []k8sObject{dep, byKind["Service"][0], byKind["PodDisruptionBudget"][0]} {
		sel := o.selector()
		if len(sel) == 0 {
			t.Errorf("%s has no selector", o.Kind)
		}
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s selects %s=%s, which the pods do not carry (%v)", o.Kind, k, v, labels)
			}
		}
	}
	var portNames []string
	for _, c := range dep.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			portNames = append(portNames, p.Name)
		}
	}
	for _, sp := range byKind["Service"][0].Spec.Ports {
		if !slices.Contains(portNames, sp.TargetPort) {
			t.Errorf("Service targetPort %q is not a container port (%v)", sp.TargetPort, portNames)
		}
	}
	names := map[string]bool{}
	for _, o := range append(byKind["ConfigMap"], byKind["Secret"]...) {
		names[o.Metadata.Name] = true
	}
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && !names[v.ConfigMap.Name] {
			t.Errorf("volume uses ConfigMap %s, not in the manifest", v.ConfigMap.Name)
		}
		if v.Secret != nil && !names[v.Secret.SecretName] {
			t.Errorf("volume uses Secret %s, not in the manifest", v.Secret.SecretName)
		}
	}
}

var dockerBuild = regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 go build .*)$`)

// TestDockerfileBuild runs the Dockerfile's build command as written (no Docker needed) and
// checks that it yields a static binary of cmd/saslgate, the package the e2e tests build and
// run, and that the image runs it as a non-root user.
func TestDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	b, err := os.ReadFile(filepath.Join(examples, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if n := strings.Count(text, "\nFROM "); n < 2 {
		t.Errorf("%d FROM lines, want a multi-stage build", n)
	}
	last := text[strings.LastIndex(text, "\nFROM "):]
	if !strings.HasPrefix(last, "\nFROM scratch") && !strings.Contains(strings.SplitN(last, "\n", 3)[1], "distroless/static") {
		t.Errorf("final stage is not scratch or distroless/static: %q", strings.SplitN(last, "\n", 3)[1])
	}
	if m := regexp.MustCompile(`(?m)^USER (\d+)`).FindStringSubmatch(last); m == nil || m[1] == "0" {
		t.Errorf("final stage does not run as a numeric non-root USER")
	}
	m := dockerBuild.FindStringSubmatch(text)
	if m == nil || !strings.HasSuffix(m[1], " ./cmd/saslgate") {
		t.Fatalf("no `RUN CGO_ENABLED=0 go build … ./cmd/saslgate` line in the Dockerfile")
	}
	requireTool(t, "sh")
	bin := filepath.Join(t.TempDir(), "saslgate")
	build := strings.Replace(m[1], "/out/saslgate", bin, 1)
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "VERSION=dockerfile-test")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, out)
	}
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary is dynamically linked (%v): it would not run FROM scratch", p.Type)
		}
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !bytes.Equal(out, []byte("saslgate dockerfile-test\n")) {
		t.Errorf("version: %q, %v", out, err)
	}
}
