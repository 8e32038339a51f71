// Sparklines and small line charts on a canvas: one series of numbers (nulls are gaps),
// scaled to the canvas, drawn at the device's pixel ratio.

export function spark(canvas, values, { color = '#58a6ff', min = 0, max = null, fill = true } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 120;
  const hgt = canvas.clientHeight || 28;
  if (canvas.width !== w * ratio || canvas.height !== hgt * ratio) {
    canvas.width = w * ratio;
    canvas.height = hgt * ratio;
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, hgt);
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  if (finite.length === 0) return;
  let top = max === null ? Math.max(...finite) : max;
  if (top <= min) top = min + 1;
  const x = (i) => (values.length < 2 ? w : (i / (values.length - 1)) * (w - 1));
  const y = (v) => hgt - 1 - ((v - min) / (top - min)) * (hgt - 3);
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.25;
  ctx.beginPath();
  let open = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) { open = false; return; }
    if (open) ctx.lineTo(x(i), y(v)); else ctx.moveTo(x(i), y(v));
    open = true;
  });
  ctx.stroke();
  if (fill) {
    ctx.globalAlpha = 0.15;
    ctx.lineTo(w, hgt);
    ctx.lineTo(0, hgt);
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
  }
}
