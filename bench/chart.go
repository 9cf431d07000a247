package main

import (
	"fmt"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writeChart draws metric m against C (sync levels of the first layout),
// one line per client, log scales on both axes, and saves it to path; the
// extension picks the format (.svg, .png). Callers check hasChart first.
func writeChart(path string, res *results, m metric, title string) error {
	ix := indexRuns(res.Runs)
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "C (goroutines, each sending one record and waiting)"
	p.Y.Label.Text = m.name + " (median; log scale)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	var xticks []plot.Tick
	for _, c := range res.Meta.Levels {
		if c != asyncLevel {
			xticks = append(xticks, plot.Tick{Value: float64(c), Label: strconv.Itoa(int(c))})
		}
	}
	p.X.Tick.Marker = plot.ConstantTicks(xticks)
	p.Y.Tick.Marker = ticks125{}
	p.Legend.Top = true
	p.Legend.Left = !m.lower // the empty corner: CPU falls with C, records/s rises
	p.Add(plotter.NewGrid())
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, client := range res.Meta.Clients {
		var pts plotter.XYs
		for _, c := range res.Meta.Levels {
			v := ix.stat(cellKey{res.Meta.Layouts[0], c}, client, m).med
			if c != asyncLevel && !math.IsNaN(v) && v > 0 {
				pts = append(pts, plotter.XY{X: float64(c), Y: v})
				lo, hi = min(lo, v), max(hi, v)
			}
		}
		if len(pts) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("chart %s: %w", path, err)
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i)
		line.Width = vg.Points(1.5)
		points.Color = plotutil.Color(i)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(client, line, points)
	}
	if hi > 0 {
		p.Y.Min, p.Y.Max = lo/1.3, hi*2.5 // room for the legend above the lines
	}
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

// hasChart reports whether res has a line to draw: a layout and two sync
// levels or more (a log axis over one value has no range, and gonum
// panics drawing it).
func hasChart(res *results) bool {
	sync := 0
	for _, c := range res.Meta.Levels {
		if c != asyncLevel {
			sync++
		}
	}
	return len(res.Meta.Layouts) > 0 && sync >= 2
}

// ticks125 marks a log axis at 1, 2 and 5 times each power of ten, with
// unlabelled minor ticks between; plot.LogTicks labels powers of ten only,
// which leaves most lines without a readable value.
type ticks125 struct{}

// Ticks implements plot.Ticker.
func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for m := 1.0; m < 10; m++ {
			v := m * math.Pow(10, e)
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = tickLabel(v)
			}
			ts = append(ts, t)
		}
	}
	return ts
}

// tickLabel prints 2000 as 2k and 1000000 as 1M.
func tickLabel(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', -1, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'g', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}
