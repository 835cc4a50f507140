window.addEventListener('load', function () {
  var figs = document.querySelectorAll('img[data-figure]'); var ok = 0;
  figs.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { img.dataset.rendered = 'yes'; ok++; } });
  var el = document.getElementById('render-check');
  if (el) { el.textContent = 'figures rendered: ' + ok + ' of ' + figs.length; }
});
