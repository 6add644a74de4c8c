package main

import (
	"bytes"
	"cmp"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/flannel-go/flannel/e2e/benchkit"
)

// Chart size: wide enough for the legend beside the curves.
const (
	chartW = 16 * vg.Centimeter
	chartH = 9 * vg.Centimeter
)

var (
	colours = map[string]color.Color{
		benchkit.Ours:     color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
		benchkit.Upstream: color.RGBA{R: 0xd6, G: 0x5f, B: 0x00, A: 0xff},
	}
	grey = color.RGBA{R: 0x88, G: 0x88, B: 0x88, A: 0xff}
)

type curve struct {
	file, title, xLabel, yLabel string
	bench, metric               string
	logY                        bool
}

var curves = []curve{
	{"bench-control-converge.svg", "Control plane: time to converge", "peer leases", "seconds (log scale)", "control", "converge", true},
	{"bench-control-rss.svg", "Control plane: peak RSS", "peer leases", "MB", "control", "peak RSS", false},
	{"bench-kube-program.svg", "Kubernetes mode: time to program every node", "annotated nodes", "seconds (log scale)", "kube", "time to program", true},
	{"bench-kube-rss.svg", "Kubernetes mode: peak RSS", "annotated nodes", "MB", "kube", "peak RSS", false},
}

const netChart = "bench-net-throughput.svg"

// writeCharts draws every chart the results make into dir, removing those they no longer make.
func writeCharts(reports []*benchkit.Report, dir string) ([]string, error) {
	files, err := drawCharts(reports, dir)
	if err != nil {
		return nil, err
	}
	known := []string{netChart}
	for _, c := range curves {
		known = append(known, c.file)
	}
	for _, f := range known {
		if p := filepath.Join(dir, f); !slices.Contains(files, p) {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				return nil, err
			}
		}
	}
	return files, nil
}

func drawCharts(reports []*benchkit.Report, dir string) ([]string, error) {
	var files []string
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, c := range curves {
		r, ok := has(reports, c.bench)
		if !ok || len(scales(r, c.metric)) < 2 {
			continue
		}
		p, err := curveChart(r, c)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.file, err)
		}
		if err := save(p, filepath.Join(dir, c.file)); err != nil {
			return nil, err
		}
		files = append(files, filepath.Join(dir, c.file))
	}
	if r, ok := has(reports, "net"); ok {
		p, err := throughputChart(r)
		if err != nil {
			return nil, fmt.Errorf("throughput chart: %w", err)
		}
		f := filepath.Join(dir, netChart)
		if err := save(p, f); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

func scales(r *benchkit.Report, metric string) []float64 {
	var xs []float64
	for _, res := range r.Results {
		if res.Metric == metric && res.X > 0 && !slices.Contains(xs, res.X) {
			xs = append(xs, res.X)
		}
	}
	slices.Sort(xs)
	return xs
}

// curveChart draws each daemon's median of c.metric against X.
func curveChart(r *benchkit.Report, c curve) (*plot.Plot, error) {
	p := newPlot()
	p.Title.Text = c.title
	p.X.Label.Text = c.xLabel
	p.Y.Label.Text = c.yLabel
	p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, xTicks(scales(r, c.metric))
	if c.logY {
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	}
	p.Legend.Top, p.Legend.Left, p.Legend.XOffs = true, true, vg.Points(12)
	p.Add(plotter.NewGrid())
	var targets plotter.XYs
	yMin, yMax := 0.0, 0.0
	for _, d := range []string{benchkit.Ours, benchkit.Upstream} {
		var pts, over plotter.XYs
		for _, res := range r.Results {
			if res.Daemon != d || res.Metric != c.metric || res.X <= 0 {
				continue
			}
			v, isOver, ok := res.Median()
			if !ok {
				continue
			}
			if isOver {
				over = append(over, plotter.XY{X: res.X, Y: v})
			} else {
				pts = append(pts, plotter.XY{X: res.X, Y: v})
			}
			if res.Target > 0 {
				targets = append(targets, plotter.XY{X: res.X, Y: res.Target})
			}
		}
		slices.SortFunc(pts, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		for _, xy := range append(slices.Clone(pts), over...) {
			if yMin == 0 || xy.Y < yMin {
				yMin = xy.Y
			}
			yMax = max(yMax, xy.Y)
		}
		if len(pts) > 0 {
			line, points, err := plotter.NewLinePoints(pts)
			if err != nil {
				return nil, err
			}
			line.Color, points.Color = colours[d], colours[d]
			line.Width = vg.Points(1.5)
			points.Shape = draw.CircleGlyph{}
			p.Add(line, points)
			p.Legend.Add(label(r, d), line, points)
		}
		if len(over) > 0 {
			s, err := plotter.NewScatter(over)
			if err != nil {
				return nil, err
			}
			s.Color, s.Shape, s.Radius = colours[d], draw.TriangleGlyph{}, vg.Points(4)
			p.Add(s)
			p.Legend.Add(label(r, d)+": not within the limit (drawn at it)", s)
		}
	}
	if len(targets) > 0 {
		s, err := plotter.NewScatter(targets)
		if err != nil {
			return nil, err
		}
		s.Color, s.Shape, s.Radius = grey, draw.CrossGlyph{}, vg.Points(5)
		p.Add(s)
		p.Legend.Add(benchkit.Ours+" target", s)
		for _, t := range targets {
			yMin, yMax = min(yMin, t.Y), max(yMax, t.Y)
		}
	}
	xs := scales(r, c.metric)
	p.X.Min, p.X.Max = xs[0]/1.3, xs[len(xs)-1]*1.3
	if c.logY {
		p.Y.Min, p.Y.Max = yMin/2, yMax*5
	} else {
		p.Y.Min, p.Y.Max = 0, yMax*1.35
	}
	return p, nil
}

func xTicks(xs []float64) plot.ConstantTicks {
	var ts plot.ConstantTicks
	for _, x := range xs {
		ts = append(ts, plot.Tick{Value: x, Label: fmt.Sprintf("%g", x)})
	}
	return ts
}

var netPaths = []string{"underlay (no overlay)", "vxlan", "host-gw", "udp", "wireguard"}

// throughputChart draws each path's median throughput, ours beside upstream's.
func throughputChart(r *benchkit.Report) (*plot.Plot, error) {
	p := newPlot()
	p.Title.Text = "Data plane: TCP throughput pod to pod (median of the rounds)"
	p.Y.Label.Text = "Gbit/s"
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	w := vg.Points(22)
	values := func(daemon string, underlay bool) (plotter.Values, bool) {
		vs := make(plotter.Values, len(netPaths))
		found := false
		for i, path := range netPaths {
			if (i == 0) != underlay {
				continue
			}
			if res, ok := r.Find(daemon, path, "throughput"); ok {
				if v, over, ok := res.Median(); ok && !over {
					vs[i], found = v, true
				}
			}
		}
		return vs, found
	}
	names := slices.Clone(netPaths)
	names[0] = "underlay"
	bars := []struct {
		daemon, legend string
		underlay       bool
		offset         vg.Length
		colour         color.Color
	}{
		{benchkit.Ours, "underlay (no overlay)", true, 0, grey},
		{benchkit.Ours, label(r, benchkit.Ours), false, -w / 2, colours[benchkit.Ours]},
		{benchkit.Upstream, label(r, benchkit.Upstream), false, w / 2, colours[benchkit.Upstream]},
	}
	drawn, top := 0, 0.0
	for _, b := range bars {
		vs, ok := values(b.daemon, b.underlay)
		if !ok {
			continue
		}
		bc, err := plotter.NewBarChart(vs, w)
		if err != nil {
			return nil, err
		}
		bc.Color, bc.Offset = b.colour, b.offset
		bc.LineStyle.Width = 0
		p.Add(bc)
		p.Legend.Add(b.legend, bc)
		drawn++
		var xys []plotter.XY
		var texts []string
		for i, v := range vs {
			if v > 0 {
				xys, texts = append(xys, plotter.XY{X: float64(i), Y: v}), append(texts, strconv.FormatFloat(v, 'f', 2, 64))
				top = max(top, v)
			}
		}
		labels, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: texts})
		if err != nil {
			return nil, err
		}
		for i := range labels.TextStyle {
			labels.TextStyle[i].Font.Variant = "Sans"
			labels.TextStyle[i].Font.Size = vg.Points(8)
			labels.TextStyle[i].XAlign = draw.XCenter
		}
		labels.Offset = vg.Point{X: b.offset, Y: vg.Points(2)}
		p.Add(labels)
	}
	if drawn == 0 {
		return nil, fmt.Errorf("no throughput results")
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(names))-0.4
	p.Y.Min, p.Y.Max = 0, top*1.3 // room for the legend
	return p, nil
}

func newPlot() *plot.Plot {
	p := plot.New()
	for _, f := range []*font.Font{&p.Title.TextStyle.Font, &p.Legend.TextStyle.Font,
		&p.X.Label.TextStyle.Font, &p.X.Tick.Label.Font, &p.Y.Label.TextStyle.Font, &p.Y.Tick.Label.Font} {
		f.Variant = "Sans"
	}
	return p
}

// save writes p as SVG with fonts named, not embedded (small files that diff well).
func save(p *plot.Plot, file string) error {
	c := vgsvg.New(chartW, chartH)
	p.Draw(draw.New(c))
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return os.WriteFile(file, buf.Bytes(), 0o644)
}
