package kubeproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Image is what `make image` builds and the manifests' containers run.
const Image = "localhost/flannel-go/flannel:latest"

// ContainerImage is a container of a manifest object and the image it runs.
type ContainerImage struct {
	Object    string // Kind/name
	Container string
	Image     string
}

// PodImages lists, in order, the containers of all kinds of the pods and pod templates.
func PodImages(objs []*unstructured.Unstructured) []ContainerImage {
	var out []ContainerImage
	podContainers(objs, func(o *unstructured.Unstructured, _, c map[string]any) {
		name, _ := c["name"].(string)
		image, _ := c["image"].(string)
		out = append(out, ContainerImage{Object: o.GetKind() + "/" + o.GetName(), Container: name, Image: image})
	})
	return out
}

// HostMount is a container's mount of a hostPath volume.
type HostMount struct {
	Container string
	MountPath string
	HostPath  string
	ReadOnly  bool
}

// PodHostMounts lists, in order, the hostPath mounts of the containers of all kinds of
// the pods and pod templates.
func PodHostMounts(objs []*unstructured.Unstructured) []HostMount {
	var out []HostMount
	podContainers(objs, func(_ *unstructured.Unstructured, spec, c map[string]any) {
		hostPaths := map[string]string{}
		vols, _, _ := unstructured.NestedSlice(spec, "volumes")
		for _, v := range vols {
			m, _ := v.(map[string]any)
			name, _ := m["name"].(string)
			if p, ok, _ := unstructured.NestedString(m, "hostPath", "path"); ok {
				hostPaths[name] = p
			}
		}
		name, _ := c["name"].(string)
		mounts, _, _ := unstructured.NestedSlice(c, "volumeMounts")
		for _, v := range mounts {
			m, _ := v.(map[string]any)
			vol, _ := m["name"].(string)
			p, ok := hostPaths[vol]
			if !ok {
				continue
			}
			path, _ := m["mountPath"].(string)
			ro, _ := m["readOnly"].(bool)
			out = append(out, HostMount{Container: name, MountPath: path, HostPath: p, ReadOnly: ro})
		}
	})
	return out
}

// podContainers calls f with each container of all kinds, in order, of the pods and pod
// templates, and the pod spec holding it.
func podContainers(objs []*unstructured.Unstructured, f func(o *unstructured.Unstructured, spec, container map[string]any)) {
	for _, o := range objs {
		path := []string{"spec", "template", "spec"}
		if o.GetKind() == "Pod" {
			path = []string{"spec"}
		}
		spec, ok, _ := unstructured.NestedMap(o.Object, path...)
		if !ok {
			continue
		}
		for _, field := range []string{"initContainers", "containers", "ephemeralContainers"} {
			cs, _, _ := unstructured.NestedSlice(spec, field)
			for _, c := range cs {
				m, _ := c.(map[string]any)
				f(o, spec, m)
			}
		}
	}
}

// ReadManifest parses a multi-document YAML file into objects (empty documents skipped).
func ReadManifest(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubeproc: %w", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("kubeproc: %s: %w", path, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// ApplyManifest server-side applies each object in order after a dry run (only that if dryRunOnly).
func ApplyManifest(ctx context.Context, rc *rest.Config, path string, dryRunOnly bool) error {
	objs, err := ReadManifest(path)
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubeproc: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubeproc: %w", err)
	}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("kubeproc: %s %s: %w", gvk, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(mapping.Resource).Namespace(o.GetNamespace())
		}
		data, err := o.MarshalJSON()
		if err != nil {
			return fmt.Errorf("kubeproc: %w", err)
		}
		force := true
		opts := metav1.PatchOptions{FieldManager: "kubeproc", Force: &force, DryRun: []string{metav1.DryRunAll}}
		if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, opts); err != nil {
			return fmt.Errorf("kubeproc: dry-run apply of %s %s/%s: %w", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
		if dryRunOnly {
			continue
		}
		opts.DryRun = nil
		if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, opts); err != nil {
			return fmt.Errorf("kubeproc: apply of %s %s/%s: %w", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
	}
	return nil
}

// ServiceAccountToken creates the service account if needed and mints a token for it.
func ServiceAccountToken(ctx context.Context, cs kubernetes.Interface, namespace, name string) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("kubeproc: service account %s/%s: %w", namespace, name, err)
	}
	exp := int64(24 * 3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("kubeproc: token for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// GrantServiceAccount sets ClusterRole role to rules and binds it, by name, to the account.
func GrantServiceAccount(ctx context.Context, cs kubernetes.Interface, role string, rules []rbacv1.PolicyRule, namespace, serviceAccount string) error {
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: rules}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		old, gerr := cs.RbacV1().ClusterRoles().Get(ctx, role, metav1.GetOptions{})
		if gerr != nil {
			return fmt.Errorf("kubeproc: cluster role %s: %w", role, gerr)
		}
		old.Rules = rules
		_, err = cs.RbacV1().ClusterRoles().Update(ctx, old, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("kubeproc: cluster role %s: %w", role, err)
		}
	} else if err != nil {
		return fmt.Errorf("kubeproc: cluster role %s: %w", role, err)
	}
	b := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: serviceAccount}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubeproc: cluster role binding %s: %w", role, err)
	}
	return nil
}

// CreatePodOnNode creates a pod bound to node, which no kubelet runs, for POD_NAME lookups.
func CreatePodOnNode(ctx context.Context, cs kubernetes.Interface, namespace, name, node, serviceAccount string) error {
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.PodSpec{
			NodeName:                     node,
			ServiceAccountName:           serviceAccount,
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "flanneld", Image: Image}},
		},
	}
	if _, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubeproc: pod %s/%s: %w", namespace, name, err)
	}
	return nil
}
