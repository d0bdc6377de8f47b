package apps

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/homelab/rack/inventory"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

// Labels. Selectors use LabelName, LabelManagedBy and, for the side-by-side
// strategies, LabelColour: all three are fixed for a Deployment's life.
// LabelTrack (stable or candidate) names the role of an object whose role
// never changes: the in-place Deployment and Service, the role Services
// <app> (stable) and <app>-preview (candidate) and the preview route. It is
// never on pods, in a selector, or on a slot's Deployment and Service,
// whose role flips on promote (see slotTrack).
const (
	LabelName      = "app.kubernetes.io/name"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "rack"
	LabelColour    = "rack.homelab/colour"
	LabelTrack     = "rack.homelab/track"

	TrackStable    = "stable"
	TrackCandidate = "candidate"
)

// Argo CD annotations that carry the order of application (see the package
// comment); the Pulumi deliverer reads the same through Wave.
const (
	AnnotationSyncWave    = "argocd.argoproj.io/sync-wave"
	AnnotationSyncOptions = "argocd.argoproj.io/sync-options"
)

// Zero-downtime timings of every Deployment.
const (
	// PreStopSeconds keeps a terminating pod serving while Traefik, kube-proxy
	// and MetalLB stop sending it requests.
	PreStopSeconds = 10
	// TerminationGracePeriodSeconds counts the pause too: the app keeps 30 s
	// after SIGTERM to finish its requests and shut down.
	TerminationGracePeriodSeconds = PreStopSeconds + 30
)

// PortName names the app's port on containers and Services.
const PortName = "app"

// DefaultNamespace is where apps live unless Options.Namespace says otherwise.
const DefaultNamespace = "apps"

// DefaultStoragePath is where apps[].storage is mounted when path is unset.
const DefaultStoragePath = "/data"

// builder renders the objects of one app.
type builder struct {
	app inventory.App
	ns  string
	// secret is the set of env keys read from the Secret <app>-env.
	secret map[string]bool
}

func newBuilder(app inventory.App, opts Options) *builder {
	ns := opts.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	b := &builder{app: app, ns: ns}
	for _, k := range opts.SecretEnv {
		if b.secret == nil {
			b.secret = map[string]bool{}
		}
		b.secret[k] = true
	}
	return b
}

// Names of the objects, derived from the app's name.
func (b *builder) slotName(c Colour) string { return b.app.Name + "-" + string(c) }
func (b *builder) previewName() string      { return b.app.Name + "-preview" }
func (b *builder) dataName() string         { return b.app.Name + "-data" }

// selector is the pods' labels: the app, and its slot when c is set.
func (b *builder) selector(c Colour) map[string]string {
	l := map[string]string{LabelName: b.app.Name, LabelManagedBy: ManagedBy}
	if c != "" {
		l[LabelColour] = string(c)
	}
	return l
}

func (b *builder) meta(name, track string, c Colour) metav1.ObjectMeta {
	l := b.selector(c)
	if track != "" {
		l[LabelTrack] = track
	}
	return metav1.ObjectMeta{Name: name, Namespace: b.ns, Labels: l}
}

// host is the Traefik host name, "" when the app has no route.
func (b *builder) host() string {
	if b.app.Expose == nil {
		return ""
	}
	return b.app.Expose.Host
}

// serviceType: expose without a host gets an address from MetalLB.
func (b *builder) serviceType() corev1.ServiceType {
	if b.app.Expose != nil && b.app.Expose.Host == "" {
		return corev1.ServiceTypeLoadBalancer
	}
	return corev1.ServiceTypeClusterIP
}

func (b *builder) replicas() int32 { return int32(max(b.app.Replicas, 1)) }

// rollingUpdate replaces pods one at a time, never below the wanted count.
func rollingUpdate() appsv1.DeploymentStrategy {
	zero, one := intstr.FromInt32(0), intstr.FromInt32(1)
	return appsv1.DeploymentStrategy{
		Type:          appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &zero, MaxSurge: &one},
	}
}

// deployment is one version of the app. c is its slot ("" for the
// strategies that replace in place).
func (b *builder) deployment(name string, c Colour, image, track string, strategy appsv1.DeploymentStrategy) *unstructured.Unstructured {
	readiness, liveness, startup := b.probes()
	ctr := corev1.Container{
		Name:           b.app.Name,
		Image:          image,
		Ports:          []corev1.ContainerPort{{Name: PortName, ContainerPort: int32(b.app.Port), Protocol: corev1.ProtocolTCP}},
		Env:            b.env(),
		ReadinessProbe: readiness,
		LivenessProbe:  liveness,
		StartupProbe:   startup,
		// The built-in sleep needs no shell or sleep binary in the image
		// (distroless images have neither).
		Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: PreStopSeconds}}},
	}
	pod := corev1.PodSpec{
		// No FOO_SERVICE_HOST variables: a Service named like an app's own
		// setting (POSTGRES_PORT...) must not change the app's behaviour.
		EnableServiceLinks:            ptr(false),
		TerminationGracePeriodSeconds: ptr(int64(TerminationGracePeriodSeconds)),
		Containers:                    []corev1.Container{ctr},
	}
	if st := b.app.Storage; st != nil {
		path := st.Path
		if path == "" {
			path = DefaultStoragePath
		}
		pod.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: path}}
		pod.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: b.dataName()},
		}}}
	}
	d := appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: b.meta(name, track, c),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(b.replicas()),
			Selector: &metav1.LabelSelector{MatchLabels: b.selector(c)},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: b.selector(c)},
				Spec:       pod,
			},
			Strategy: strategy,
		},
	}
	d.Annotations = map[string]string{AnnotationSyncOptions: "PruneLast=true"}
	return toObject(d)
}

// httpApp: an app routed by host, or with a check path, speaks HTTP.
// Anything else (a database) is only probed over TCP.
func (b *builder) httpApp() bool { return b.host() != "" || b.app.Strategy.Check != "" }

// probes are distinct on purpose. Readiness (may the pod get requests?)
// asks the app over HTTP when it speaks HTTP, on strategy.check or /, and
// may fail while a dependency is down. Liveness (must the pod be
// restarted?) only asks the kernel whether the port accepts connections, so
// a database outage never restarts the app. Startup gives slow starters on
// small machines five minutes before liveness counts.
func (b *builder) probes() (readiness, liveness, startup *corev1.Probe) {
	tcp := corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString(PortName)}}
	ready := tcp
	if b.httpApp() {
		path := b.app.Strategy.Check
		if path == "" {
			path = "/"
		}
		ready = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(PortName), Scheme: corev1.URISchemeHTTP}}
	}
	readiness = &corev1.Probe{ProbeHandler: ready, PeriodSeconds: 5, TimeoutSeconds: 2, SuccessThreshold: 1, FailureThreshold: 2}
	liveness = &corev1.Probe{ProbeHandler: tcp, PeriodSeconds: 10, TimeoutSeconds: 5, SuccessThreshold: 1, FailureThreshold: 6}
	startup = &corev1.Probe{ProbeHandler: tcp, PeriodSeconds: 5, TimeoutSeconds: 2, SuccessThreshold: 1, FailureThreshold: 60}
	return readiness, liveness, startup
}

// env is apps[].env sorted by name, so renders are byte-for-byte stable.
func (b *builder) env() []corev1.EnvVar {
	names := make([]string, 0, len(b.app.Env))
	for k := range b.app.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	var out []corev1.EnvVar
	for _, k := range names {
		if b.secret[k] {
			out = append(out, corev1.EnvVar{Name: k, ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: SecretName(b.app.Name)}, Key: k},
			}})
			continue
		}
		out = append(out, corev1.EnvVar{Name: k, Value: b.app.Env[k]})
	}
	return out
}

// service reaches the pods of slot c (all of the app's pods when c is "").
func (b *builder) service(name string, c Colour, track string, typ corev1.ServiceType) *unstructured.Unstructured {
	s := corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: b.meta(name, track, c),
		Spec: corev1.ServiceSpec{
			Type:     typ,
			Selector: b.selector(c),
			Ports: []corev1.ServicePort{{
				Name: PortName, Port: int32(b.app.Port), TargetPort: intstr.FromString(PortName), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
	// The meta of a role Service carries the slot it points at today, but
	// that label is informative only: the selector is what routes.
	s.Annotations = map[string]string{AnnotationSyncOptions: "PruneLast=true"}
	return toObject(s)
}

// pdb covers every pod of the app, both slots included. maxUnavailable 1
// lets a drain evict one pod at a time and wait for its replacement, and
// never blocks a drain for good, even with one replica (where no budget can
// avoid the gap); pods that are not running well may always be evicted.
func (b *builder) pdb() *unstructured.Unstructured {
	one := intstr.FromInt32(1)
	always := policyv1.AlwaysAllow
	p := policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: b.meta(b.app.Name, "", ""),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable:             &one,
			Selector:                   &metav1.LabelSelector{MatchLabels: b.selector("")},
			UnhealthyPodEvictionPolicy: &always,
		},
	}
	return toObject(p)
}

// pvc is apps[].storage. Argo CD never prunes or deletes it: losing a
// database because a line left the inventory is not a sync's call.
func (b *builder) pvc() (*unstructured.Unstructured, error) {
	st := b.app.Storage
	size, err := resource.ParseQuantity(st.Size)
	if err != nil {
		return nil, problem(b.app, "storage.size", "%q is not a Kubernetes quantity: write it like 1Gi", st.Size)
	}
	p := corev1.PersistentVolumeClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
		ObjectMeta: b.meta(b.dataName(), "", ""),
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	if st.Class != "" {
		p.Spec.StorageClassName = ptr(st.Class)
	}
	p.Annotations = map[string]string{AnnotationSyncOptions: "Prune=false,Delete=false"}
	return toObject(p), nil
}

// toObject turns a typed object into its JSON form, without the status and
// the empty fields the API would not return, with whole numbers as int64.
func toObject(v any) *unstructured.Unstructured {
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("apps: marshal %T: %v", v, err)) // typed API objects always marshal
	}
	var m map[string]any
	if err := utiljson.Unmarshal(data, &m); err != nil {
		panic(fmt.Sprintf("apps: unmarshal %T: %v", v, err))
	}
	delete(m, "status")
	dropEmpty(m)
	return &unstructured.Unstructured{Object: m}
}

// dropEmpty removes the empty objects encoding/json writes for struct
// fields (resources: {}, strategy: {}), which the API server drops too.
// Safe here because rack renders no object whose emptiness means something
// (like emptyDir: {}).
func dropEmpty(m map[string]any) {
	for k, v := range m {
		switch t := v.(type) {
		case map[string]any:
			dropEmpty(t)
			if len(t) == 0 {
				delete(m, k)
			}
		case []any:
			for _, e := range t {
				if em, ok := e.(map[string]any); ok {
					dropEmpty(em)
				}
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }
