// CAP dashboard UI: vanilla JS, no build step, no network beyond this API.
(function () {
  "use strict";
  var body = document.body;
  var polling = parseInt(body.dataset.polling, 10) || 2000;
  var readOnly = body.dataset.readonly === "true";
  var main = document.getElementById("main");
  var timer = null;

  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k];
      else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function api(path, opts) {
    return fetch("api/" + path, opts).then(function (r) {
      if (r.status === 204) return null;
      return r.json().then(function (j) {
        if (!r.ok && !(j && j.missing)) throw new Error((j && j.error) || r.statusText);
        return j;
      });
    });
  }
  function post(path, ids) {
    return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(ids) });
  }
  function confirmBox(text) {
    return new Promise(function (resolve) {
      var m = document.getElementById("confirm");
      document.getElementById("confirm-text").textContent = text;
      m.hidden = false;
      function done(v) { m.hidden = true; ok.onclick = cancel.onclick = null; resolve(v); }
      var ok = document.getElementById("confirm-ok"), cancel = document.getElementById("confirm-cancel");
      ok.onclick = function () { done(true); };
      cancel.onclick = function () { done(false); };
    });
  }

  // Charts on canvas.
  var colors = ["#2e6da4", "#1e8449", "#c0392b", "#d68910"];
  function drawChart(canvas, xs, series, labelX) {
    var w = canvas.width = canvas.clientWidth || 800, h = canvas.height = 180;
    var c = canvas.getContext("2d");
    c.clearRect(0, 0, w, h);
    var max = 1;
    series.forEach(function (s) { s.data.forEach(function (v) { if (v > max) max = v; }); });
    var L = 40, B = 20, W = w - L - 10, H = h - B - 10;
    c.strokeStyle = "#ccd"; c.fillStyle = "#667"; c.font = "11px sans-serif";
    c.beginPath(); c.moveTo(L, 10); c.lineTo(L, 10 + H); c.lineTo(L + W, 10 + H); c.stroke();
    c.fillText(max.toFixed(max < 10 ? 1 : 0), 2, 18); c.fillText("0", 2, 10 + H);
    var n = xs.length;
    if (n > 0) {
      c.fillText(labelX(xs[0]), L, h - 4);
      c.fillText(labelX(xs[n - 1]), L + W - 50, h - 4);
    }
    series.forEach(function (s, i) {
      c.strokeStyle = colors[i % colors.length]; c.lineWidth = 1.5; c.beginPath();
      s.data.forEach(function (v, j) {
        var x = L + (n > 1 ? j * W / (n - 1) : 0), y = 10 + H - v / max * H;
        if (j === 0) c.moveTo(x, y); else c.lineTo(x, y);
      });
      c.stroke();
    });
  }
  function legend(names) {
    return el("div", { class: "legend" }, names.map(function (n, i) {
      var s = el("span", {}, [el("i", { class: "c" + i })]);
      s.appendChild(document.createTextNode(n));
      return s;
    }));
  }
  function hhmm(t) { var d = new Date(t * 1000); return d.toTimeString().slice(0, 8); }
  function dayHour(t) { var d = new Date(t * 1000); return (d.getMonth() + 1) + "-" + d.getDate() + " " + d.getHours() + "h"; }

  function card(id, label, cls) {
    return el("div", { class: "card " + (cls || "") }, [el("div", { class: "n", id: "stat-" + id, text: "…" }), el("div", { class: "l", text: label })]);
  }

  function home() {
    var rt = el("canvas", { id: "chart-realtime" });
    var hi = el("canvas", { id: "chart-history" });
    main.replaceChildren(
      el("div", { class: "cards" }, [
        card("publishedSucceeded", "Published succeeded", "ok"), card("publishedFailed", "Published failed", "failed"),
        card("publishedDelayed", "Published delayed"), card("receivedSucceeded", "Received succeeded", "ok"),
        card("receivedFailed", "Received failed", "failed"), card("subscribers", "Subscribers"), card("servers", "Nodes")]),
      el("div", { class: "chart" }, [el("h3", { text: "Realtime (last 5 minutes)" }), legend(["publish/s", "handled/s", "handler ms"]), rt]),
      el("div", { class: "chart" }, [el("h3", { text: "Last 24 hours" }), legend(["published succeeded", "received succeeded", "published failed", "received failed"]), hi]));
    function refresh() {
      api("stats").then(function (s) {
        Object.keys(s).forEach(function (k) { var e = document.getElementById("stat-" + k); if (e) e.textContent = s[k]; });
      }).catch(function () {});
      api("metrics-realtime").then(function (m) {
        drawChart(rt, m[0], [{ data: m[1] }, { data: m[2] }, { data: m[3] }], hhmm);
      }).catch(function () {});
    }
    api("metrics-history").then(function (m) {
      drawChart(hi, m.dayHour, [{ data: m.publishSuccessed }, { data: m.subscribeSuccessed }, { data: m.publishFailed }, { data: m.subscribeFailed }], dayHour);
    }).catch(function () {});
    refresh();
    timer = setInterval(refresh, polling);
  }

  var tabs = { published: ["succeeded", "failed", "delayed", "scheduled"], received: ["succeeded", "failed", "scheduled"] };
  var state = { name: "", content: "", group: "", page: 1, per: 20 };

  function showDetail(content) {
    var m = document.getElementById("detail");
    var hdr = document.getElementById("detail-headers"), bd = document.getElementById("detail-body");
    hdr.replaceChildren(); bd.textContent = "";
    var doc;
    try { doc = JSON.parse(content); } catch (e) { doc = null; }
    if (doc && doc.Headers) {
      Object.keys(doc.Headers).forEach(function (k) {
        hdr.appendChild(el("tr", {}, [el("td", { text: k }), el("td", { text: String(doc.Headers[k]) })]));
      });
      bd.textContent = JSON.stringify(doc.Value, null, 2);
    } else {
      bd.textContent = content;
    }
    m.hidden = false;
  }
  document.getElementById("detail-close").onclick = function () { document.getElementById("detail").hidden = true; };

  function list(kind, status) {
    var action = kind === "published" ? "requeue" : "reexecute";
    var actionLabel = kind === "published" ? "Requeue" : "Re-execute";
    var tabBar = el("div", { class: "tabs" }, tabs[kind].map(function (s) {
      return el("a", { href: "#/" + kind + "/" + s, "data-status": s, class: s === status ? "active" : "", text: s[0].toUpperCase() + s.slice(1) });
    }));
    var fName = el("input", { type: "text", id: "f-name", placeholder: "Name", value: state.name });
    var fContent = el("input", { type: "text", id: "f-content", placeholder: "Content", value: state.content });
    var fGroup = kind === "received" ? el("input", { type: "text", id: "f-group", placeholder: "Group", value: state.group }) : null;
    var msg = el("div", { class: "msg", id: "list-msg" });
    var tbody = el("tbody", { id: "rows" });
    var all = el("input", { type: "checkbox", id: "select-all" });
    var pager = el("div", { class: "pager" });
    var bRedrive = el("button", { class: "primary", id: "btn-redrive", text: actionLabel, disabled: "" });
    var bDelete = el("button", { class: "danger", id: "btn-delete", text: "Delete", disabled: "" });
    // The selection survives the list's periodic refresh.
    var chosen = {};
    function selected() { return Object.keys(chosen); }
    function updateButtons() {
      var n = selected().length;
      bRedrive.disabled = bDelete.disabled = n === 0;
    }
    function search() {
      state.name = fName.value; state.content = fContent.value; state.group = fGroup ? fGroup.value : "";
      state.page = 1; chosen = {}; load();
    }
    function load() {
      var q = "?perPage=" + state.per + "&currentPage=" + state.page + "&name=" + encodeURIComponent(state.name) +
        "&content=" + encodeURIComponent(state.content) + (kind === "received" ? "&group=" + encodeURIComponent(state.group) : "");
      api(kind + "/" + status + q).then(function (r) {
        tbody.replaceChildren();
        var still = {};
        r.items.forEach(function (it) {
          var cb = el("input", { type: "checkbox", class: "sel", value: it.id, onchange: function () {
            if (cb.checked) chosen[it.id] = true; else delete chosen[it.id];
            updateButtons();
          } });
          if (chosen[it.id]) { cb.checked = true; still[it.id] = true; }
          tbody.appendChild(el("tr", { "data-id": it.id }, [
            el("td", {}, [cb]),
            el("td", { class: "id", text: it.id }),
            el("td", { class: "name" }, [el("a", { text: it.name, onclick: function () { api(kind + "/message/" + it.id).then(showDetail); } })]),
            kind === "received" ? el("td", { text: it.group }) : null,
            el("td", { text: it.retries }),
            el("td", { class: "status status-" + it.statusName, text: it.statusName }),
            el("td", { text: new Date(it.added).toLocaleString() }),
            el("td", { text: it.expiresAt ? new Date(it.expiresAt).toLocaleString() : "" })]));
        });
        chosen = still;
        all.checked = r.items.length > 0 && selected().length === r.items.length; updateButtons();
        var pages = Math.max(1, Math.ceil(r.totals / r.pageSize));
        pager.replaceChildren(
          el("button", { text: "‹ Prev", id: "page-prev", onclick: function () { if (state.page > 1) { state.page--; load(); } } }),
          el("span", { id: "page-info", text: "Page " + r.pageIndex + " of " + pages + " · " + r.totals + " messages" }),
          el("button", { text: "Next ›", id: "page-next", onclick: function () { if (state.page < pages) { state.page++; load(); } } }));
      }).catch(function (e) { msg.textContent = e.message; msg.className = "msg err"; });
    }
    function act(path, verb) {
      var ids = selected();
      if (!ids.length) return;
      confirmBox(verb + " " + ids.length + " message(s)?").then(function (ok) {
        if (!ok) return;
        post(kind + "/" + path, ids).then(function (r) {
          chosen = {};
          msg.className = "msg";
          msg.textContent = verb + ": " + r.done.length + " done" + (r.missing.length ? ", not found: " + r.missing.join(", ") : "");
          load();
        }).catch(function (e) { msg.textContent = e.message; msg.className = "msg err"; });
      });
    }
    bRedrive.onclick = function () { act(action, actionLabel); };
    bDelete.onclick = function () { act("delete", "Delete"); };
    all.onchange = function () {
      tbody.querySelectorAll("input.sel").forEach(function (c) {
        c.checked = all.checked;
        if (all.checked) chosen[c.value] = true; else delete chosen[c.value];
      });
      updateButtons();
    };
    [fName, fContent, fGroup].forEach(function (f) { if (f) f.addEventListener("keydown", function (e) { if (e.key === "Enter") search(); }); });
    var tools = [fName, fContent, fGroup, el("button", { id: "btn-search", text: "Search", onclick: search })];
    if (!readOnly) tools.push(bRedrive, bDelete);
    var head = [el("th", {}, [all]), el("th", { text: "Id" }), el("th", { text: "Name" })];
    if (kind === "received") head.push(el("th", { text: "Group" }));
    head.push(el("th", { text: "Retries" }), el("th", { text: "Status" }), el("th", { text: "Added" }), el("th", { text: "Expires" }));
    main.replaceChildren(tabBar, el("div", { class: "panel" }, [
      el("div", { class: "toolbar" }, tools), msg,
      el("table", { class: "list" }, [el("thead", {}, [el("tr", {}, head)]), tbody]), pager]));
    load();
    timer = setInterval(load, Math.max(polling, 2000));
  }

  function subscribers() {
    api("subscriber").then(function (gs) {
      var rows = [];
      gs.forEach(function (g) {
        g.values.forEach(function (v, i) {
          rows.push(el("tr", {}, [i === 0 ? el("td", { rowspan: g.childCount, text: g.group }) : null, el("td", { text: v.topic })]));
        });
      });
      main.replaceChildren(el("div", { class: "panel" }, [el("table", { class: "list", id: "subscribers" }, [
        el("thead", {}, [el("tr", {}, [el("th", { text: "Group" }), el("th", { text: "Topic" })])]), el("tbody", {}, rows)])]));
    });
  }

  function nodes() {
    api("nodes").then(function (ns) {
      main.replaceChildren(el("div", { class: "panel" }, [el("table", { class: "list", id: "nodes" }, [
        el("thead", {}, [el("tr", {}, ["Instance", "Host", "Version", "Started", "Last seen"].map(function (t) { return el("th", { text: t }); }))]),
        el("tbody", {}, ns.map(function (n) {
          return el("tr", {}, [el("td", { text: n.name + (n.self ? " (this one)" : "") }), el("td", { text: n.address }), el("td", { text: n.version }),
            el("td", { text: new Date(n.started).toLocaleString() }), el("td", { text: new Date(n.lastSeen).toLocaleString() })]);
        }))])]));
    });
  }

  function route() {
    if (timer) { clearInterval(timer); timer = null; }
    var parts = (location.hash || "#/home").slice(2).split("/");
    document.querySelectorAll("header nav a").forEach(function (a) { a.classList.toggle("active", a.dataset.nav === parts[0]); });
    if (parts[0] === "published" || parts[0] === "received") {
      var st = tabs[parts[0]].indexOf(parts[1]) >= 0 ? parts[1] : "succeeded";
      list(parts[0], st);
    } else if (parts[0] === "subscribers") subscribers();
    else if (parts[0] === "nodes") nodes();
    else home();
  }
  api("meta").then(function (m) {
    document.getElementById("meta").textContent = m.cap.name + " " + m.cap.version + " · " + m.broker.name + " · " + m.storage.name;
  }).catch(function () {});
  window.addEventListener("hashchange", route);
  route();
})();
