// Package kubernetes holds the manifests of deploy/kubernetes; its test
// decodes them strictly into the Kubernetes API types (unknown or
// duplicate fields fail) and checks the security settings.
package kubernetes

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

func decode(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := strictDecode(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// strictDecode is yaml.UnmarshalStrict (unknown and duplicate fields
// fail) plus a check it lacks: encoding/json matches field names
// case-insensitively, the API server does not, so every key of the input
// must come back, spelt the same, when the decoded object is encoded again.
func strictDecode(b []byte, into any) error {
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		return err
	}
	var in, out any
	if err := yaml.Unmarshal(b, &in); err != nil {
		return err
	}
	rt, err := yaml.Marshal(into)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(rt, &out); err != nil {
		return err
	}
	return sameKeys("", in, out)
}

func sameKeys(path string, in, out any) error {
	switch iv := in.(type) {
	case map[string]any:
		om, _ := out.(map[string]any)
		for k, v := range iv {
			ov, ok := om[k]
			if !ok {
				return fmt.Errorf("field %s%s is not the API's spelling (or is dropped)", path, k)
			}
			if err := sameKeys(path+k+".", v, ov); err != nil {
				return err
			}
		}
	case []any:
		ol, _ := out.([]any)
		if len(ol) != len(iv) {
			return fmt.Errorf("list %s has %d items, %d after decoding", path, len(iv), len(ol))
		}
		for i := range iv {
			if err := sameKeys(fmt.Sprintf("%s[%d].", strings.TrimSuffix(path, "."), i), iv[i], ol[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

func manifests(t *testing.T) (*appsv1.Deployment, *corev1.Service, *autoscalingv2.HorizontalPodAutoscaler) {
	t.Helper()
	var d appsv1.Deployment
	var s corev1.Service
	var h autoscalingv2.HorizontalPodAutoscaler
	decode(t, "deployment.yaml", &d)
	decode(t, "service.yaml", &s)
	decode(t, "hpa.yaml", &h)
	for _, c := range []struct{ got, want string }{
		{d.APIVersion + " " + d.Kind, "apps/v1 Deployment"},
		{s.APIVersion + " " + s.Kind, "v1 Service"},
		{h.APIVersion + " " + h.Kind, "autoscaling/v2 HorizontalPodAutoscaler"},
	} {
		if c.got != c.want {
			t.Errorf("kind %q, want %q", c.got, c.want)
		}
	}
	return &d, &s, &h
}

// Misspelt fields, which Kubernetes' lenient decoding (kubectl apply
// without server-side field validation) would silently drop together with
// the setting, fail the decoding.
func TestStrictDecodingRefusesMisspeltFields(t *testing.T) {
	b, err := os.ReadFile("deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"readOnlyRootFilesystem: true", "readOnlyRootFS: true", `unknown field "readOnlyRootFS"`},
		{"readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", "field spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem is not the API's spelling"},
		{"hostUsers: false", "hostUsers: false\n      hostUsers: true", `key "hostUsers" already set in map`},
	} {
		bad := strings.Replace(string(b), tc.from, tc.to, 1)
		if bad == string(b) {
			t.Fatalf("deployment.yaml has no %q", tc.from)
		}
		var d appsv1.Deployment
		if err := strictDecode([]byte(bad), &d); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.to, err, tc.want)
		}
	}
}

func TestDeploymentSecurity(t *testing.T) {
	d, _, _ := manifests(t)
	pod := d.Spec.Template.Spec
	if pod.HostUsers == nil || *pod.HostUsers {
		t.Error("hostUsers must be false: the pod gets a user namespace")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken must be false")
	}
	psc := pod.SecurityContext
	if psc == nil {
		t.Fatal("no pod securityContext")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("runAsNonRoot %v runAsUser %v: want a non-root uid", psc.RunAsNonRoot, psc.RunAsUser)
	}
	if sp := psc.SeccompProfile; sp == nil || sp.Type != corev1.SeccompProfileTypeLocalhost || sp.LocalhostProfile == nil || *sp.LocalhostProfile != "sandkit/docviewer.json" {
		t.Errorf("seccompProfile = %+v, want Localhost sandkit/docviewer.json", sp)
	}
	if ap := psc.AppArmorProfile; ap == nil || ap.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Errorf("appArmorProfile = %+v, want Unconfined (see the comment in deployment.yaml)", ap)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("no container securityContext")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("capabilities = %+v, want drop [ALL] and no add", sc.Capabilities)
	}
	// Renderers mount no procfs of their own, so the runtime's masked
	// /proc is no obstacle: unmasking it would only widen the container.
	if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
		t.Errorf("procMount = %s, want Default (renderers need no unmasked /proc)", *sc.ProcMount)
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
		if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
			t.Errorf("%s: request %v limit %v: want both, request <= limit", res, &req, &lim)
		}
	}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("volume %s mounted writable", m.Name)
		}
	}
}

// The probes reach endpoints serve has, on a port the container declares,
// with a Host header serve accepts.
func TestProbes(t *testing.T) {
	d, _, _ := manifests(t)
	c := d.Spec.Template.Spec.Containers[0]
	hosts := ""
	for i, a := range c.Args {
		if a == "-allowed-hosts" && i+1 < len(c.Args) {
			hosts = c.Args[i+1]
		}
	}
	allowed := strings.Split(hosts, ",")
	if !slices.Contains(c.Args, "serve") || hosts == "" {
		t.Fatalf("args %q: want serve with -allowed-hosts", c.Args)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readiness", c.ReadinessProbe, "/readyz"},
		{"liveness", c.LivenessProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: no httpGet probe", p.name)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path {
			t.Errorf("%s probe path %q, want %q", p.name, g.Path, p.path)
		}
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return g.Port == intstr.FromString(cp.Name) }) {
			t.Errorf("%s probe port %v is not a declared port", p.name, g.Port)
		}
		i := slices.IndexFunc(g.HTTPHeaders, func(h corev1.HTTPHeader) bool { return h.Name == "Host" })
		if i < 0 || !slices.Contains(allowed, g.HTTPHeaders[i].Value) {
			t.Errorf("%s probe: Host header must be one of -allowed-hosts %q (serve answers 421 otherwise)", p.name, allowed)
		}
	}
	// /healthz may take a renderer spawn: the probe must wait longer than
	// serve's own check timeout (20 s).
	if c.LivenessProbe != nil && c.LivenessProbe.TimeoutSeconds <= 20 {
		t.Errorf("liveness timeoutSeconds %d, want > 20", c.LivenessProbe.TimeoutSeconds)
	}
}

func TestServiceAndAutoscalerMatchTheDeployment(t *testing.T) {
	d, s, h := manifests(t)
	labels := d.Spec.Template.Labels
	for k, v := range d.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("deployment selector %s=%s does not match its pod labels", k, v)
		}
	}
	if len(s.Spec.Selector) == 0 {
		t.Error("service has no selector")
	}
	for k, v := range s.Spec.Selector {
		if labels[k] != v {
			t.Errorf("service selector %s=%s does not match the pods", k, v)
		}
	}
	c := d.Spec.Template.Spec.Containers[0]
	for _, p := range s.Spec.Ports {
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return p.TargetPort == intstr.FromString(cp.Name) }) {
			t.Errorf("service port %d targets %v, not a declared container port", p.Port, p.TargetPort)
		}
		if p.Port != 80 {
			t.Errorf("service port %d: the allowed Host values carry no port, so clients must reach port 80", p.Port)
		}
	}
	ref := h.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != d.Name {
		t.Errorf("autoscaler targets %+v, want the Deployment %s", ref, d.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
		t.Errorf("replicas min %v max %d", h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	for _, m := range h.Spec.Metrics {
		if m.Resource == nil {
			continue
		}
		if _, ok := c.Resources.Requests[m.Resource.Name]; !ok {
			t.Errorf("autoscaling on %s utilization needs a %s request", m.Resource.Name, m.Resource.Name)
		}
	}
}
