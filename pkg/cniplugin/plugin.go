package cniplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/subnetenv"
)

// GCIfName is the ifname for GC's DEL of an attachment upstream's plugin saved without one.
const GCIfName = "eth0"

// About is the plugin's version line.
func About(version, commit string) string {
	return fmt.Sprintf("CNI Plugin flannel version %s (%s/%s) commit %s", version, runtime.GOOS, runtime.GOARCH, commit)
}

// Plugin runs the CNI verbs. The zero value runs real delegates and prints to os.Stdout.
type Plugin struct {
	Exec   invoke.Exec // runs the delegates; nil: the CNI library's default
	Stdout io.Writer   // receives ADD's result; nil: os.Stdout
}

// Funcs are the verbs for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	ctx := context.Background()
	return skel.CNIFuncs{
		Add:    func(a *skel.CmdArgs) error { return p.Add(ctx, a) },
		Del:    func(a *skel.CmdArgs) error { return p.Del(ctx, a) },
		Check:  func(a *skel.CmdArgs) error { return p.Check(ctx, a) },
		Status: func(a *skel.CmdArgs) error { return p.Status(ctx, a) },
		GC:     func(a *skel.CmdArgs) error { return p.GC(ctx, a) },
	}
}

// Add saves the delegate config, then runs the delegate's ADD; saving first lets the DEL
// after a failed ADD reach the delegate.
func (p *Plugin) Add(ctx context.Context, args *skel.CmdArgs) error {
	nc, err := parseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := nc.CheckDelegate(); err != nil {
		return configError(err)
	}
	env, err := subnetenv.LoadContents(nc.SubnetFile)
	if err != nil {
		return subnetEnvError(nc.SubnetFile, err, types.ErrTryAgainLater)
	}
	conf, err := DelegateConfig(nc, env)
	if err != nil {
		return configError(err)
	}
	if err := (Store{Dir: nc.DataDir}).Save(args.ContainerID, args.IfName, conf); err != nil {
		return err
	}
	result, err := p.run(ctx, nc.DelegateType(), conf, cniArgs("ADD", args))
	if err != nil {
		return fmt.Errorf("failed to delegate add: %w", err)
	}
	if nc.CNIVersion != "" && result.Version() != nc.CNIVersion {
		if result, err = result.GetAsVersion(nc.CNIVersion); err != nil {
			return fmt.Errorf("failed to convert the delegate's result to version %s: %w", nc.CNIVersion, err)
		}
	}
	out := p.Stdout
	if out == nil {
		out = os.Stdout
	}
	return result.PrintTo(out)
}

// Del runs the delegate's DEL with the saved config, then forgets it; nothing saved, or
// an unreadable config, is success.
func (p *Plugin) Del(ctx context.Context, args *skel.CmdArgs) error {
	nc, err := parseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	st := Store{Dir: nc.DataDir}
	conf, err := st.Load(args.ContainerID)
	if errors.Is(err, fs.ErrNotExist) {
		return st.Remove(args.ContainerID) // an interface name may be left
	}
	if err != nil {
		return fmt.Errorf("failed to read the saved delegate config: %w", err)
	}
	typ, err := ParseSaved(conf)
	if err != nil {
		klog.ErrorS(err, "Removing an unusable saved delegate config; the interface goes away with the network namespace",
			"containerID", args.ContainerID, "dataDir", nc.DataDir)
		return st.Remove(args.ContainerID)
	}
	if _, err := p.run(ctx, typ, conf, cniArgs("DEL", args)); err != nil {
		return err
	}
	return st.Remove(args.ContainerID)
}

// Check runs the delegate's CHECK with the saved config and the runtime's prevResult.
func (p *Plugin) Check(ctx context.Context, args *skel.CmdArgs) error {
	nc, err := parseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	conf, err := Store{Dir: nc.DataDir}.Load(args.ContainerID)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no saved delegate config for container %s in %s: it was not added by flannel with this dataDir", args.ContainerID, nc.DataDir)
	}
	if err != nil {
		return fmt.Errorf("failed to read the saved delegate config: %w", err)
	}
	typ, err := ParseSaved(conf)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", nc.DataDir, args.ContainerID, err)
	}
	checkConf, err := withPrevResult(conf, nc)
	if err != nil {
		return err
	}
	_, err = p.run(ctx, typ, checkConf, cniArgs("CHECK", args))
	return err
}

// Status reports code 50 while the subnet file is unusable, then asks the delegate.
func (p *Plugin) Status(ctx context.Context, args *skel.CmdArgs) error {
	nc, err := parseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := nc.CheckDelegate(); err != nil {
		return configError(err)
	}
	env, err := subnetenv.LoadContents(nc.SubnetFile)
	if err != nil {
		return subnetEnvError(nc.SubnetFile, err, types.ErrPluginNotAvailable)
	}
	conf, err := DelegateConfig(nc, env)
	if err != nil {
		return configError(err)
	}
	_, err = p.run(ctx, nc.DelegateType(), conf, cniArgs("STATUS", args))
	return err
}

// GC deletes each saved attachment missing from the runtime's list (none without a list),
// then runs the delegate's GC.
func (p *Plugin) GC(ctx context.Context, args *skel.CmdArgs) error {
	nc, err := parseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	valid, ok := nc.Attachments()
	if !ok {
		return configError(errors.New("GC needs the runtime's cni.dev/valid-attachments list; nothing was collected"))
	}
	errs := p.dropStale(ctx, nc, valid, args)

	if err := nc.CheckDelegate(); err != nil {
		return joinErrors(append(errs, configError(err)))
	}
	env, err := subnetenv.LoadContents(nc.SubnetFile)
	if err != nil {
		errs = append(errs, fmt.Errorf("the delegate's GC did not run: %w", subnetEnvError(nc.SubnetFile, err, types.ErrTryAgainLater)))
		return joinErrors(errs)
	}
	conf, err := DelegateConfig(nc, env)
	if err == nil {
		conf, err = withAttachments(conf, args.StdinData)
	}
	if err != nil {
		return joinErrors(append(errs, configError(err)))
	}
	if _, err := p.run(ctx, nc.DelegateType(), conf, cniArgs("GC", args)); err != nil {
		errs = append(errs, fmt.Errorf("the delegate's GC: %w", err))
	}
	return joinErrors(errs)
}

// dropStale forgets each stale attachment whose DEL succeeds; one without a recorded
// ifname (upstream's) is valid while its container is listed.
func (p *Plugin) dropStale(ctx context.Context, nc *NetConf, valid []types.GCAttachment, args *skel.CmdArgs) []error {
	st := Store{Dir: nc.DataDir}
	saved, orphans, err := st.List()
	if err != nil {
		return []error{fmt.Errorf("failed to list the saved delegate configs: %w", err)}
	}
	var errs []error
	for _, id := range orphans {
		if err := st.Remove(id); err != nil {
			errs = append(errs, err)
		}
	}
	for _, id := range saved {
		ifName, known := st.IfName(id)
		if isValid(valid, id, ifName, known) {
			continue
		}
		if !known {
			ifName = GCIfName
		}
		conf, err := st.Load(id)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", id, err))
			continue
		}
		typ, err := ParseSaved(conf)
		if err == nil {
			a := &invoke.Args{Command: "DEL", ContainerID: id, IfName: ifName, Path: args.Path}
			_, err = p.run(ctx, typ, conf, a)
			if err != nil {
				errs = append(errs, fmt.Errorf("container %s: the delegate's DEL: %w", id, err))
				continue
			}
		} else {
			klog.ErrorS(err, "Removing an unusable saved delegate config", "containerID", id, "dataDir", nc.DataDir)
		}
		if err := st.Remove(id); err != nil {
			errs = append(errs, err)
			continue
		}
		klog.InfoS("Collected a stale attachment", "containerID", id, "ifName", ifName)
	}
	return errs
}

func isValid(valid []types.GCAttachment, id, ifName string, ifNameKnown bool) bool {
	for _, a := range valid {
		if a.ContainerID == id && (!ifNameKnown || a.IfName == ifName) {
			return true
		}
	}
	return false
}

// run runs verb a.Command of delegate typ from CNI_PATH; only ADD has a result.
func (p *Plugin) run(ctx context.Context, typ string, conf []byte, a *invoke.Args) (types.Result, error) {
	exec := p.Exec
	if exec == nil {
		exec = &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}
	}
	path, err := exec.FindInPath(typ, filepath.SplitList(a.Path))
	if err != nil {
		return nil, err
	}
	if a.Command == "ADD" {
		return invoke.ExecPluginWithResult(ctx, path, conf, a, exec)
	}
	return nil, invoke.ExecPluginWithoutResult(ctx, path, conf, a, exec)
}

func cniArgs(verb string, a *skel.CmdArgs) *invoke.Args {
	return &invoke.Args{
		Command:       verb,
		ContainerID:   a.ContainerID,
		NetNS:         a.Netns,
		IfName:        a.IfName,
		PluginArgsStr: a.Args,
		Path:          a.Path,
	}
}

// withPrevResult sets the saved config's cniVersion and prevResult to the runtime's.
func withPrevResult(conf []byte, nc *NetConf) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		return nil, fmt.Errorf("saved delegate config: %w", err)
	}
	if nc.CNIVersion != "" {
		m["cniVersion"] = nc.CNIVersion
	}
	if nc.PrevResult != nil {
		m["prevResult"] = nc.PrevResult
	} else {
		delete(m, "prevResult")
	}
	return json.Marshal(m)
}

// withAttachments copies the runtime's valid-attachments keys into conf, as given.
func withAttachments(conf, netconf []byte) ([]byte, error) {
	var src map[string]json.RawMessage
	if err := json.Unmarshal(netconf, &src); err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		return nil, err
	}
	for _, k := range []string{"cni.dev/valid-attachments", "cni.dev/attachments"} {
		if v, ok := src[k]; ok {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

func parseNetConf(data []byte) (*NetConf, error) {
	nc, err := ParseNetConf(data)
	if err != nil {
		return nil, configError(err)
	}
	return nc, nil
}

func configError(err error) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
}

// subnetEnvError keeps upstream's text and adds advice; only a missing file gets code
// (flanneld may be starting), the rest 999.
func subnetEnvError(path string, err error, code uint) *types.Error {
	msg := fmt.Sprintf("failed to load flannel 'subnet.env' file: %v. Check the flannel pod log for this node.", err)
	var pathErr *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		msg += fmt.Sprintf(" flanneld is not running or not ready on this node: it writes %s once it holds a subnet lease; start flanneld (or wait until it is ready) and retry.", path)
	case errors.As(err, &pathErr):
		code = types.ErrInternal // unreadable: the error says why
	default:
		msg += fmt.Sprintf(" %s is incomplete or damaged: flanneld writes it whole, so restart flanneld on this node to rewrite it, and check that subnetFile names the file flanneld's --subnet-file writes.", path)
		code = types.ErrInternal
	}
	return types.NewError(code, msg, "")
}

// joinErrors makes one CNI error of several (the library passes on only the first).
func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return types.NewError(types.ErrInternal, strings.Join(msgs, "; "), "")
}
