// The DICOM attributes the viewer reads from DICOM JSON (PS3.18 F.2), by keyword. DICOM JSON
// keys an element by its tag as eight upper-case hex digits, group then element.

export const Tag = Object.freeze({
  // Patient and study (PS3.3 C.7.1.1, C.7.2.1)
  PatientName: '00100010',
  PatientID: '00100020',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
  PatientAge: '00101010',
  StudyDate: '00080020',
  AcquisitionDate: '00080022',
  StudyTime: '00080030',
  StudyDescription: '00081030',
  InstitutionName: '00080080',
  StudyInstanceUID: '0020000D',
  // Series (C.7.3.1)
  Modality: '00080060',
  SeriesInstanceUID: '0020000E',
  SeriesNumber: '00200011',
  SeriesDescription: '0008103E',
  NumberOfSeriesRelatedInstances: '00201209',
  // Instance and image (C.12.1, C.7.6.2, C.7.6.3)
  SOPClassUID: '00080016',
  SOPInstanceUID: '00080018',
  InstanceNumber: '00200013',
  ImagePositionPatient: '00200032',
  ImageOrientationPatient: '00200037',
  FrameOfReferenceUID: '00200052',
  SliceThickness: '00180050',
  NumberOfFrames: '00280008',
  PhotometricInterpretation: '00280004',
  SamplesPerPixel: '00280002',
  Rows: '00280010',
  Columns: '00280011',
  BitsAllocated: '00280100',
  PixelRepresentation: '00280103',
  AvailableTransferSyntaxUID: '00083002',
  // Cine (C.7.6.5)
  RecommendedDisplayFrameRate: '00082144',
  CineRate: '00180040',
  FrameTime: '00181063',
  // Palette colour (C.7.6.3.1.5, C.7.6.3.1.6)
  RedPaletteColorLUTDescriptor: '00281101',
  GreenPaletteColorLUTDescriptor: '00281102',
  BluePaletteColorLUTDescriptor: '00281103',
  RedPaletteColorLUTData: '00281201',
  GreenPaletteColorLUTData: '00281202',
  BluePaletteColorLUTData: '00281203',
  // VOI LUT (C.11.2)
  VOILUTSequence: '00283010',
  LUTDescriptor: '00283002',
  LUTExplanation: '00283003',
  LUTData: '00283006',
  VOILUTFunction: '00281056',
});

// The first value of an attribute in an instance's DICOM JSON, or undefined.
export function value(json, tag, index = 0) {
  return json?.[tag]?.Value?.[index];
}
