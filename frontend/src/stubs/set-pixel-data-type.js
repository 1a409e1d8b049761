// The image loader's setPixelDataType (@cornerstonejs/dicom-image-loader,
// imageLoader/setPixelDataType.js) as the viewer's build has it: a decoded frame's values put
// in the typed array its smallest and largest values call for, as the original does, but not
// copied when they are in that array already. The original always makes a new array of the
// values (`new TypedArray(pixelData)`), a second copy of every decoded frame: 0.6 ms of the
// page's thread per 512 x 512 CT slice, 200 times for a stack (docs/viewer.md).
import getPixelDataTypeFromMinMax from '../../node_modules/@cornerstonejs/dicom-image-loader/dist/esm/shared/getPixelDataTypeFromMinMax.js';

export default function setPixelDataType(imageFrame) {
  const TypedArray = getPixelDataTypeFromMinMax(imageFrame.smallestPixelValue, imageFrame.largestPixelValue);
  if (!TypedArray) throw new Error('Could not apply a typed array to the pixel data');
  if (imageFrame.pixelData instanceof TypedArray) return;
  imageFrame.pixelData = new TypedArray(imageFrame.pixelData);
}
