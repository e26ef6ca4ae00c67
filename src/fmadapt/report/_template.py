# ruff: noqa: E501  (HTML lines read better unwrapped)
"""The report's Jinja2 template and stylesheet, kept in Python so the report needs no package data files.

Autoescaping is on (see html.py); only CSS, the image-check script and our own notes are marked safe.
"""

CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#d9dee7;--bg:#fff;--soft:#f5f7fa;--accent:#2f5bd3;--bad:#b42318;--ok:#067647}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","PingFang SC","Microsoft YaHei",
 sans-serif;color:var(--fg);background:var(--bg)}
header,nav,main,footer{max-width:1120px;margin:0 auto;padding:0 20px}
header{padding-top:24px}
h1{font-size:1.6em;margin:0 0 4px}
h2{font-size:1.3em;margin:0 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:1.05em;margin:18px 0 6px}
.muted,.sub{color:var(--muted)}
.sub{margin:0 0 14px;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0 6px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;background:var(--soft);min-width:130px}
.card .k{font-size:.78em;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:1.15em;font-weight:600;word-break:break-word}
.card.big .v{font-size:1.6em;color:var(--accent)}
nav ol{columns:3 200px;margin:6px 0 0;padding-left:22px}
nav a{color:var(--accent);text-decoration:none}
section{margin:28px auto;padding-top:6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:.92em}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--soft)}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.low td{background:#fdecea}
tr.small td{color:var(--muted)}
.scroll{max-height:460px;overflow:auto;display:inline-block;max-width:100%}
.note{border-left:4px solid var(--line);background:var(--soft);padding:8px 12px;color:var(--muted)}
.warn{border-left:4px solid #f79009;background:#fffaeb;padding:8px 12px}
code,pre,.mono{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:.9em}
pre{background:var(--soft);padding:8px;white-space:pre-wrap;word-break:break-all}
.mono{word-break:break-all}
figure{margin:8px 0}
figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
figcaption{color:var(--muted);font-size:.85em}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:12px}
.gallery.wide{grid-template-columns:repeat(auto-fill,minmax(340px,1fr))}
.item{border:1px solid var(--line);border-radius:8px;padding:8px;background:#fff;overflow:hidden}
.item img{max-width:100%;height:auto;display:block;margin:0 auto 4px;image-rendering:auto}
.pair{display:flex;gap:6px}.pair img{width:50%}
.meta{font-size:.85em;word-break:break-word}
.badge{display:inline-block;border-radius:10px;padding:0 7px;font-size:.8em;color:#fff}
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}
.tokens{line-height:1.9;font-size:.92em}
.tokens span{padding:1px 2px;border-radius:3px}
.legend span{padding:1px 6px;border-radius:3px}
details{margin:6px 0}
summary{cursor:pointer;color:var(--accent)}
footer{color:var(--muted);font-size:.85em;padding-bottom:30px}
@media print{.scroll{max-height:none;overflow:visible}nav{display:none}section{break-inside:avoid-page}}
"""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="generator" content="fmadapt">
<title>{{ v.title }}</title>
<style>{{ css }}</style>
</head>
<body data-images-total="0" data-images-ok="pending">
{% macro note(id) %}<p class="note">Not run — {{ v.notes[id]|codeify }}</p>{% endmacro %}
{% macro figure(key, alt) %}
{% if v.fig[key] %}<figure><img src="data:{{ v.fig_mime[key] }};base64,{{ v.fig[key] }}" alt="{{ alt }}"></figure>
{% elif v.fig_errors[key] %}<p class="warn">Figure could not be drawn: {{ v.fig_errors[key] }}</p>
{% endif %}
{% endmacro %}
{% macro kv(rows, cls='') %}
<table class="{{ cls }}">{% for k, val in rows %}<tr><th>{{ k }}</th><td class="mono">{{ val }}</td></tr>{% endfor %}</table>
{% endmacro %}
<header>
<h1>{{ v.title }}</h1>
<p class="sub">{{ v.model.dir }} · created {{ v.created }}</p>
<div class="cards">
{% if v.headline.split is not none %}
<div class="card big"><div class="k">accuracy ({{ v.headline.split }}, n={{ v.headline.n }})</div><div class="v">{{ v.headline.accuracy }}</div></div>
<div class="card"><div class="k">macro F1</div><div class="v">{{ v.headline.macro_f1 }}</div></div>
{% endif %}
<div class="card"><div class="k">task</div><div class="v">{{ v.model.task }}</div></div>
<div class="card"><div class="k">backbone</div><div class="v">{{ v.model.backbone }}</div></div>
<div class="card"><div class="k">strategy</div><div class="v">{{ v.model.strategy }}</div></div>
<div class="card"><div class="k">classes</div><div class="v">{{ v.classes|length }}</div></div>
</div>
{% if v.classes %}<p class="muted">Classes: {{ v.classes[:50]|join(", ") }}{% if v.classes|length > 50 %} … and {{ v.classes|length - 50 }} more{% endif %}</p>{% endif %}
</header>
<nav id="toc" aria-label="Contents"><h2>Contents</h2><ol>
{% for s in v.sections %}<li><a href="#{{ s.id }}">{{ s.title }}</a>{% if not s.present %} <span class="muted">(not run)</span>{% endif %}</li>
{% endfor %}</ol></nav>
<main>

<section id="data" data-section="data"><h2>Data</h2>
{% if v.present.data %}
{% if v.data.sizes %}<h3>Examples per split</h3>{{ kv(v.data.sizes) }}{% endif %}
{% if v.data.counts.rows %}<h3>Examples per class and split</h3>
<div class="scroll"><table><tr><th>class</th>{% for s in v.data.counts.splits %}<th>{{ s }}</th>{% endfor %}<th>total</th></tr>
{% for r in v.data.counts.rows %}<tr><td>{{ r.name }}</td>{% for c in r.cells %}<td class="n">{{ c }}</td>{% endfor %}<td class="n">{{ r.total }}</td></tr>
{% endfor %}</table></div>{% endif %}
{% if v.data.validation %}<p><b>Validation:</b> {{ v.data.validation }}</p>{% endif %}
{% if v.data.vocabulary %}<h3>Vocabulary</h3>{{ kv(v.data.vocabulary) }}{% endif %}
{% for w in v.data.warnings %}<p class="warn">{{ w }}</p>{% endfor %}
<h3>Skipped files and rows ({{ v.data.n_skipped }})</h3>
{% if v.data.skipped %}<div class="scroll"><table><tr><th>where</th><th>reason</th></tr>
{% for s in v.data.skipped %}<tr><td class="mono">{{ s.where }}</td><td>{{ s.reason }}</td></tr>
{% endfor %}</table></div>
{% if v.data.n_skipped > v.data.skipped|length %}<p class="muted">… and {{ v.data.n_skipped - v.data.skipped|length }} more.</p>{% endif %}
{% else %}<p class="muted">Nothing was skipped.</p>{% endif %}
{% else %}{{ note('data') }}{% endif %}
</section>

<section id="training" data-section="training"><h2>Training</h2>
{% if v.present.training %}
{{ figure('training', 'Training curves: loss and validation accuracy per epoch' if v.history.epochs else 'Probe: validation accuracy for each regularisation strength C') }}
{% if v.history.epochs %}<details><summary>Per-epoch values ({{ v.history.epochs|length }})</summary><div class="scroll"><table>
<tr><th>epoch</th><th>train loss</th><th>val loss</th><th>val acc</th><th>lr</th></tr>
{% for e in v.history.epochs %}<tr><td class="n">{{ e.epoch }}</td><td class="n">{{ e.train_loss }}</td><td class="n">{{ e.val_loss }}</td><td class="n">{{ e.val_acc }}</td><td class="n">{{ e.lr }}</td></tr>
{% endfor %}</table></div></details>{% endif %}
{% if v.history.candidates %}<h3>Probe: regularisation search</h3><table><tr><th>C</th><th>feature scaling</th><th>class weights</th><th>val accuracy</th><th>val loss</th></tr>
{% for c in v.history.candidates %}<tr><td class="n">{{ c.C }}</td><td>{{ c.scaling }}</td><td>{{ c.class_weight }}</td><td class="n">{{ c.val_acc }}</td><td class="n">{{ c.val_loss }}</td></tr>
{% endfor %}</table>{% endif %}
{% if v.history.auto %}<h3>Strategy auto: the candidates, judged on the validation split</h3><table><tr><th>candidate</th><th>val {{ v.history.auto.metric }}</th><th>val accuracy</th><th>seeds</th><th>seconds</th><th>n-gram weight</th><th>status</th></tr>
{% for r in v.history.auto.rows %}<tr><td>{{ r.candidate }}</td><td class="n">{{ r.score }}</td><td class="n">{{ r.acc }}</td><td class="n">{{ r.seeds }}</td><td class="n">{{ r.seconds }}</td><td class="n">{{ r.weight }}</td><td>{{ r.status }}</td></tr>
{% endfor %}</table><p>Winner: <b>{{ v.history.auto.winner }}</b> ({{ v.history.auto.why }}). Final model: {{ v.history.auto.final }}.</p>{% endif %}
{% if v.history.federation %}{% set f = v.history.federation %}<h3>Federation</h3>{{ kv(f.summary) }}
<details><summary>Clients ({{ f.clients|length }}): examples and label skew (0 = the training split's class mix)</summary><div class="scroll"><table><tr><th>client</th><th>examples</th><th>label skew</th><th>classes</th></tr>
{% for c in f.clients %}<tr><td class="n">{{ c.client }}</td><td class="n">{{ c.examples }}</td><td class="n">{{ c.skew }}</td><td>{{ c.classes }}</td></tr>
{% endfor %}</table></div></details>
<h4>Rounds: the global model on the server's held-out split</h4><div class="scroll"><table><tr><th>round</th><th>accuracy</th><th>loss</th><th>updates used</th><th>bytes</th><th>seconds</th><th>rejected / failed</th></tr>
{% for r in f.rounds %}<tr><td class="n">{{ r.round }}</td><td class="n">{{ r.acc }}</td><td class="n">{{ r.loss }}</td><td class="n">{{ r.used }}</td><td class="n">{{ r.bytes }}</td><td class="n">{{ r.seconds }}</td><td>{{ r.bad }}</td></tr>
{% endfor %}</table></div>{% endif %}
{% if v.history.other %}{{ kv(v.history.other) }}{% endif %}
{% if v.history.self_training %}<h3>Self-training on unlabeled data</h3>{{ kv(v.history.self_training) }}{% endif %}
{% else %}{{ note('training') }}{% endif %}
{% if v.config %}<details><summary>Fit configuration</summary>{{ kv(v.config) }}</details>{% endif %}
</section>

<section id="metrics" data-section="metrics"><h2>Metrics</h2>
{% if v.present.metrics %}
<table><tr><th>split</th><th>n</th><th>accuracy</th><th>macro F1</th><th>ECE</th><th>skipped</th></tr>
{% for s in v.splits %}<tr><td>{{ s.name }}</td><td class="n">{{ s.n }}</td><td class="n">{{ s.accuracy }}</td><td class="n">{{ s.macro_f1 }}</td><td class="n">{{ s.ece }}</td><td class="n">{{ s.skipped }}</td></tr>
{% endfor %}</table>
<p class="muted">ECE: expected calibration error (0 = confidences match accuracy).</p>
{% for s in v.splits if s.task_rows %}
<h3>{{ s.name }} ({{ s.task }})</h3>
<table>{% for k, val in s.task_rows %}<tr><th>{{ k }}</th><td class="n">{{ val }}</td></tr>{% endfor %}</table>
{{ figure('residuals_' ~ s.key, 'Predicted against true target for split ' ~ s.name ~ ', and the residuals') }}
{% endfor %}
{% else %}{{ note('metrics') }}{% endif %}
</section>

<section id="confusion" data-section="confusion"><h2>Confusion matrix</h2>
{% if v.present.confusion %}
{% for s in v.splits if s.has_cm %}
<h3>{{ s.name }}</h3>
{{ figure('confusion_' ~ s.key, 'Confusion matrix for split ' ~ s.name ~ ': rows are true classes, columns predicted') }}
{% if s.pairs %}<details{% if s.n_classes > 30 %} open{% endif %}><summary>Most confused pairs ({{ s.pairs|length }})</summary>
<table><tr><th>true</th><th>predicted as</th><th>count</th><th>% of true class</th></tr>
{% for p in s.pairs %}<tr><td>{{ p.true }}</td><td>{{ p.pred }}</td><td class="n">{{ p.count }}</td><td class="n">{{ p.rate }}</td></tr>
{% endfor %}</table></details>{% endif %}
{% endfor %}
{% else %}{{ note('confusion') }}{% endif %}
</section>

<section id="per-class" data-section="per-class"><h2>Per-class metrics</h2>
{% if v.present['per-class'] %}
{% for s in v.splits if s.per_class %}
<details{% if s.name == v.primary %} open{% endif %}><summary>{{ s.name }} ({{ s.per_class|length }} classes)</summary>
<div class="scroll"><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{% for c in s.per_class %}<tr{% if c.low %} class="low"{% endif %}><td>{{ c.name }}</td><td class="n">{{ c.precision }}</td><td class="n">{{ c.recall }}</td><td class="n">{{ c.f1 }}</td><td class="n">{{ c.support }}</td></tr>
{% endfor %}</table></div></details>
{% endfor %}
<p class="muted">Rows shaded red have F1 below 0.5.</p>
{% else %}{{ note('per-class') }}{% endif %}
</section>

<section id="calibration" data-section="calibration"><h2>Calibration</h2>
{% if v.present.calibration %}
<p>Temperature: <b>{{ v.calibration.temperature }}</b> (logits are divided by it before the softmax; 1 = unchanged).</p>
<table><tr><th>metric</th><th>before</th><th>after</th></tr>
{% for r in v.calibration.rows %}<tr><td>{{ r.name }}</td><td class="n">{{ r.before }}</td><td class="n">{{ r.after }}</td></tr>{% endfor %}</table>
{% if v.calibration.note %}<p class="muted">Temperature {{ v.calibration.note }}. Before and after are measured on those same predictions (in-sample); predictions made with this model use the temperature.</p>{% endif %}
{{ figure('reliability', 'Reliability diagram: accuracy against confidence before and after temperature scaling') }}
{% else %}{{ note('calibration') }}{% endif %}
</section>

<section id="robustness" data-section="robustness"><h2>Robustness</h2>
{% if v.present.robustness %}
{% if v.evaluated_on.robustness %}<p class="muted">Evaluated on: {{ v.evaluated_on.robustness }}</p>{% endif %}
<p>Modality: {{ v.robustness.modality }} · n = {{ v.robustness.n }} · clean {{ v.robustness.metric }} {{ v.robustness.clean }}</p>
{{ figure('robustness_corruptions', 'Score against corruption severity, one line per corruption') }}
{{ figure('robustness_text', 'Score against text perturbation rate, one line per perturbation') }}
{{ figure('robustness_adversarial', 'Accuracy against adversarial budget epsilon for FGSM and PGD') }}
{{ figure('robustness', '') }}
{% if v.robustness.note %}<p class="muted">{{ v.robustness.note }}</p>{% endif %}
{% for t in v.robustness.tables %}<details><summary>{{ t.title }}</summary><div class="scroll"><table>
<tr><th></th>{% for c in t.cols %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in t.rows %}<tr><td>{{ r.name }}</td>{% for c in r.cells %}<td class="n">{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table></div></details>{% endfor %}
{% if v.robustness.seconds %}<details><summary>Time taken (s)</summary>{{ kv(v.robustness.seconds) }}</details>{% endif %}
{% else %}{{ note('robustness') }}{% endif %}
</section>

<section id="fairness" data-section="fairness"><h2>Fairness</h2>
{% if v.present.fairness %}
{% if v.evaluated_on.fairness %}<p class="muted">Evaluated on: {{ v.evaluated_on.fairness }}</p>{% endif %}
{{ kv(v.fairness.summary) }}
{{ figure('fairness', 'Quality per group') }}
{% if v.fairness.groups %}<div class="scroll"><table><tr><th>group</th><th>n</th>{% for c in v.fairness.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for g in v.fairness.groups %}<tr{% if g.small %} class="small"{% endif %}><td>{{ g.name }}{% if g.small %} (small){% endif %}</td><td class="n">{{ g.n }}</td>{% for x in g.cells %}<td class="n">{{ x }}</td>{% endfor %}</tr>
{% endfor %}</table></div>{% endif %}
{% if v.fairness.missing %}<p class="warn">Without a group: {{ v.fairness.missing|join(", ") }} (shown as "(missing)", left out of the differences)</p>{% endif %}
{% for n in v.fairness.notes %}<p class="muted">{{ n }}</p>{% endfor %}
{% else %}{{ note('fairness') }}{% endif %}
</section>

<section id="explanations" data-section="explanations"><h2>Explanations</h2>
{% if v.present.explanations %}
{% if v.evaluated_on.explanations %}<p class="muted">Evaluated on: {{ v.evaluated_on.explanations }}</p>{% endif %}
{% if v.explanations %}
<p class="legend muted">Token colours: <span style="background-color:rgba(220,40,40,0.6)">supports the prediction</span> <span style="background-color:rgba(40,90,220,0.6)">speaks against it</span>; stronger colour = larger attribution.</p>
<div class="gallery wide">
{% for e in v.explanations %}<div class="item">
{% if e.original and e.image %}<div class="pair"><img src="{{ e.original }}" alt="Input {{ e.id }}"><img src="{{ e.image }}" alt="Attribution map for {{ e.id }} ({{ e.method }})"></div>
{% elif e.image or e.original %}<img src="{{ e.image or e.original }}" alt="Attribution map for {{ e.id }} ({{ e.method }})">{% endif %}
{% if e.tokens %}<p class="tokens">{% for t in e.tokens %}<span style="{{ t.style }}" title="{{ t.score }}">{{ t.text }}</span> {% endfor %}</p>{% endif %}
<div class="meta"><b>{{ e.id }}</b> {% if e.correct is not none %}<span class="badge {{ 'ok' if e.correct else 'bad' }}">{{ 'correct' if e.correct else 'wrong' }}</span>{% endif %}<br>
label: {{ e.label }} · predicted: {{ e.pred }} ({{ e.confidence }})<br><span class="muted">{{ e.method }}</span></div>
</div>
{% endfor %}</div>
{% if v.n_explanations > v.explanations|length %}<p class="muted">Showing {{ v.explanations|length }} of {{ v.n_explanations }}.</p>{% endif %}
{% else %}<p class="muted">No explanations were produced.</p>{% endif %}
{% else %}{{ note('explanations') }}{% endif %}
</section>

<section id="misclassified" data-section="misclassified"><h2>Misclassified examples</h2>
{% if v.present.misclassified %}
{% if v.misclassified %}<div class="gallery">
{% for e in v.misclassified %}<div class="item">
{% if e.thumb %}<img src="{{ e.thumb }}" alt="Misclassified example {{ e.id }}">{% endif %}
{% if e.text is not none %}<p class="meta">{{ e.text }}</p>{% endif %}
<div class="meta"><b>{{ e.id }}</b><br>true: {{ e.label }} · predicted: <b>{{ e.pred }}</b> ({{ e.confidence }})</div>
</div>
{% endfor %}</div>
{% if v.n_misclassified > v.misclassified|length %}<p class="muted">Showing {{ v.misclassified|length }} of {{ v.n_misclassified }}.</p>{% endif %}
{% else %}<p class="muted">No misclassified examples.</p>{% endif %}
{% else %}{{ note('misclassified') }}{% endif %}
</section>

<section id="compression" data-section="compression"><h2>Compression</h2>
{% if v.present.compression %}
<p class="muted"><code>fmadapt compress</code> ({{ v.compression.created }}): every candidate measured in the same run on the same {{ v.compression.held_out }} held-out inputs; latency at batch 1, throughput at batch 64. Candidates: {{ v.compression.out }}</p>
<div class="scroll"><table><tr><th>candidate</th><th>kind</th><th>accuracy</th><th>MB</th><th>p50 ms</th><th>p95 ms</th><th>inputs/s</th></tr>
{% for r in v.compression.rows %}<tr><td>{{ r.name }}</td><td>{{ r.kind }}</td>{% if r.refused %}<td colspan="5" class="muted">refused: {{ r.refused }}</td>{% else %}<td class="n">{{ r.accuracy }}</td><td class="n">{{ r.mb }}</td><td class="n">{{ r.p50 }}</td><td class="n">{{ r.p95 }}</td><td class="n">{{ r.per_s }}</td>{% endif %}</tr>
{% endfor %}</table></div>
{% if v.compression.note %}<p>{{ v.compression.note }}</p>{% endif %}
{% else %}{{ note('compression') }}{% endif %}
</section>

<section id="environment" data-section="environment"><h2>Environment</h2>
{% if v.present.environment %}
{{ kv(v.env.summary) }}
{% if v.env.versions %}<h3>Versions</h3>{{ kv(v.env.versions) }}{% endif %}
{% if v.env.hashes %}<h3>Weight hashes (SHA-256)</h3>{{ kv(v.env.hashes) }}{% endif %}
{% if v.env.command %}<h3>Command</h3><pre>{{ v.env.command }}</pre>{% endif %}
{% else %}{{ note('environment') }}{% endif %}
</section>
</main>
<footer>Generated by fmadapt. This file is self-contained: it loads nothing from the network.</footer>
<script>{{ script }}</script>
</body>
</html>
"""
