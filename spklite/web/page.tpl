<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>spklite · Synology package server</title>
<style>{{!css}}</style>
</head>
<body>
<main>
<header>
<h1>spklite <span>Synology package server</span></h1>
<p class="counts">{{total}} package file{{'' if total == 1 else 's'}}{{', %d rejected' % len(rejected) if rejected else ''}}</p>
</header>

<section class="card add">
<h2>Add this server to your NAS</h2>
<p class="location" title="Location for Package Center">{{location}}</p>
% if loopback:
<p class="msg unreachable" role="alert">This page was opened through {{location}}, an address only this machine answers on: a NAS
cannot reach it.
% if reachable:
Use this machine's network address instead:
% for url in reachable:
<code class="reachable">{{url}}</code>
% end
% else:
Open the page through this machine's network name or address, or set <code>--hostname</code>.
% end
% if listen_host:
spklite also listens on {{listen_host}} only: start it with <code>--host 0.0.0.0</code> for a NAS to connect.
% end
</p>
% end
<ol>
<li>Package Center → <b>Settings</b> → <b>Package Sources</b> → <b>Add</b>: any name, and the Location above.</li>
<li>DSM 6 only: Package Center → <b>Settings</b> → <b>General</b> → <b>Trust Level</b> → <b>Any publisher</b>.</li>
</ol>
% if channel.prefix:
<p class="channel">Channel <code>{{channel.shown}}</code>: {{'the files in ' + channel.folder + '/, offered only at this Location' if channel.folder else 'the main catalog'}}{{', as the beta channel (for DSM 7 too)' if channel.beta else ''}}.</p>
% end
% if sources:
<p class="channels">Other sources here:
% for c in sources:
<a href="{{base}}{{c['prefix']}}"><code>{{base}}{{c['prefix']}}</code></a> ({{'files in ' + c['folder'] + '/' if c['folder'] else 'main catalog'}}{{', beta channel' if c['beta'] else ''}})
% end
</p>
% end
</section>

<form class="card picker" method="get" action="./">
<label class="model">NAS model
<input name="model" list="models" value="{{form['model']}}" placeholder="e.g. DS920+" autocomplete="off">
</label>
<datalist id="models">
% for m in models:
% for name in str(m['model']).split('/'):
<option value="{{name}}">{{m['platform']}}</option>
% end
% end
</datalist>
<label>or platform
<select name="platform">
<option value="">(from model)</option>
% for p in platforms:
<option value="{{p}}"{{' selected' if p == form['platform'] else ''}}>{{p}}{{' (%s)' % families[p] if families.get(p, p) != p else ''}}</option>
% end
</select>
</label>
<label>DSM
<select name="dsm">
% for d in dsm_options:
<option{{' selected' if d == form['dsm'] else ''}}>{{d}}</option>
% end
</select>
</label>
<label>Channel
<select name="channel">
% for c in channels:
<option{{' selected' if c == form['channel'] else ''}}>{{c}}</option>
% end
</select>
</label>
<button type="submit">Show packages</button>
</form>

% for message in messages:
<p class="msg" role="alert">{{message}}</p>
% end

% if not total:
<section class="card empty">
<h2>No packages yet</h2>
<p>Put <code>.spk</code> files into <code class="path">{{folder}}</code> on this server (subfolders are fine).
% if watching:
They show up here by themselves, no restart needed.</p>
% else:
File watching is off: restart spklite to pick them up.</p>
% end
% if rejected:
<p>{{len(rejected)}} file{{'' if len(rejected) == 1 else 's'}} there could not be used: see <a href="./?view=files">all files</a>.</p>
% end
</section>
% end

<section class="list">
% if total:
<form class="search" method="get" action="./" role="search">
% for name, value in keep.items():
<input type="hidden" name="{{name}}" value="{{value}}">
% end
<input type="search" name="q" value="{{search}}" placeholder="Find a package by name" aria-label="Find a package by name">
<button type="submit">Find</button>
</form>
% end
% if view == 'files':
<h2>All package files <small>every version, as found in the folder · <a href="./">back to packages</a></small></h2>
% elif choice:
<h2>What a {{choice.title}} on DSM {{choice.dsm}} gets <small>{{choice.channel}} channel · {{len(items)}} package{{'' if len(items) == 1 else 's'}} · <a href="{{nas_link}}">as JSON</a></small></h2>
% elif total:
<h2>All packages <small>newest version of each · pick a NAS above to see exactly what it gets · <a href="./?view=files">all files</a></small></h2>
% end
% if search:
<p class="none">Showing names with “{{search}}” · <a href="{{unfiltered}}">show all</a></p>
% end
% if choice and not items and view != 'files':
<p class="none">Nothing on this server for that NAS{{' matches “%s”' % search if search else ''}}.</p>
% end
<ul class="pkgs">
% for it in items:
<li class="pkg" data-package="{{it['package']}}" data-version="{{it['version']}}">
<img src="{{it['icon']}}" srcset="{{it['icon']}} 1x, {{it['icon2x'] or it['icon']}} 2x" width="64" height="64" alt="" loading="lazy">
<div>
<h3>{{it['name']}} <span class="ver">{{it['version']}}</span>{{!' <span class="badge">beta</span>' if it['beta'] else ''}}{{!' <span class="badge">yanked</span>' if it['yanked'] else ''}}</h3>
<p class="desc">{{it['desc']}}</p>
<p class="meta"><code>{{it['package']}}</code> · {{it['dsm']}} · {{it['arch']}}{{' · ' + it['file'] if view == 'files' else ''}} · <a class="dl" href="{{it['link']}}" download>Download {{it['size']}}</a> · <span class="downloads">{{it['downloads']}} download{{'' if it['downloads'] == 1 else 's'}}</span></p>
% for w in (it['warnings'] if view == 'files' else ()):
<p class="warn">⚠ {{w}}</p>
% end
</div>
</li>
% end
</ul>
% if not_offered:
<details class="not-offered">
<summary>{{len(not_offered)}} file{{'' if len(not_offered) == 1 else 's'}} not offered to this NAS, and why</summary>
<ul class="reasons">
% for d in not_offered:
<li data-not-offered="{{d.file}}" data-rule="{{d.rule}}"><code>{{d.file}}</code>{{' · %s %s' % (d.package, d.version) if d.package else ''}} <span>{{d.reason}}</span></li>
% end
</ul>
<p class="none"><a href="{{explain_link}}">as JSON</a> (/v1/explain; add <code>&amp;package=ID</code> for one package)</p>
</details>
% end
% if view == 'files':
<h2>Rejected files <small>not valid packages: never offered or served</small></h2>
% if not rejected:
<p class="none">None.</p>
% end
<ul class="rejected">
% for r in rejected:
<li data-file="{{r.path}}"><code>{{r.path}}</code> <span>{{r.reason}}</span></li>
% end
</ul>
% end
</section>

<footer>spklite {{version}} · <a href="./?view=files">all files</a> · <a href="v1/packages">JSON API</a> · <a href="health">health</a></footer>
</main>
</body>
</html>
