// "Play this utterance": from its start, paused at its end (checked every frame, not every 250 ms).
() => {
  const v = document.querySelector("#player video");
  const read = (id) => parseFloat((document.querySelector(`#${id} input, #${id} textarea`) || {}).value);
  const start = read("ed-start"), end = read("ed-end");
  if (!v || isNaN(start)) return;
  v.currentTime = start;
  v.play();
  const token = Symbol();
  v.__wbPlay = token;
  const watch = () => {
    if (v.__wbPlay !== token || v.paused) return;
    if (!isNaN(end) && v.currentTime >= end) { v.pause(); return; }
    requestAnimationFrame(watch);
  };
  requestAnimationFrame(watch);
}
